//! Which resource types the server serves, from its discovery documents (`/api`,
//! `/apis` and one resource list per group version).
//!
//! Unlike [`kube::discovery::Discovery::run`], a group version whose list can not be
//! fetched does not fail the whole discovery: what was found is kept and the failures
//! are reported next to it, as client-go's `ServerPreferredResources` does. The
//! namespace controller turns those failures into its `NamespaceDeletionDiscoveryFailure`
//! condition; the garbage collector watches what it could discover.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::Client;
use kube::api::ApiResource;

/// One resource (in one group version) as discovery describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceType {
    /// Group, version, kind and plural, for building dynamic [`kube::Api`]s.
    pub api_resource: ApiResource,
    pub namespaced: bool,
    /// The verbs discovery lists (`get`, `list`, `watch`, `delete`, ...).
    pub verbs: Vec<String>,
}

impl ResourceType {
    /// Whether discovery lists `verb` for this resource.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// Whether it supports every verb of `verbs`.
    pub fn supports_all(&self, verbs: &[&str]) -> bool {
        verbs.iter().all(|verb| self.supports(verb))
    }

    /// `plural.group`, or just `plural` for the core group.
    pub fn group_resource(&self) -> String {
        let ar = &self.api_resource;
        if ar.group.is_empty() {
            ar.plural.clone()
        } else {
            format!("{}.{}", ar.plural, ar.group)
        }
    }
}

impl fmt::Display for ResourceType {
    /// client-go's GroupVersionResource form: `group/version, Resource=plural`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ar = &self.api_resource;
        write!(f, "{}/{}, Resource={}", ar.group, ar.version, ar.plural)
    }
}

/// A group version whose resource list could not be fetched.
#[derive(Clone, Debug)]
pub struct GroupVersionFailure {
    pub group_version: String,
    pub error: String,
}

/// What one discovery round found.
#[derive(Clone, Debug, Default)]
pub struct Discovered {
    /// Every resource of every served group version (subresources left out).
    pub all: Vec<Arc<ResourceType>>,
    /// One version per group and resource: the group's preferred version when it
    /// serves the resource, else the first version listed that does.
    pub preferred: Vec<Arc<ResourceType>>,
    /// Group versions that could not be discovered.
    pub failures: Vec<GroupVersionFailure>,
}

impl Discovered {
    /// The resource of `kind` in `api_version` (any served version, not only the
    /// preferred one: owner references name the version they were written with).
    pub fn resolve(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.all
            .iter()
            .find(|r| r.api_resource.api_version == api_version && r.api_resource.kind == kind)
            .cloned()
    }

    /// The preferred resources that support all of `verbs`.
    pub fn preferred_supporting<'a>(
        &'a self,
        verbs: &'a [&'a str],
    ) -> impl Iterator<Item = &'a Arc<ResourceType>> + 'a {
        self.preferred.iter().filter(|r| r.supports_all(verbs))
    }

    /// Upstream's message for a partial discovery failure, if there was one.
    pub fn failure_message(&self) -> Option<String> {
        if self.failures.is_empty() {
            return None;
        }
        let mut parts: Vec<String> = self
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.group_version, f.error))
            .collect();
        parts.sort();
        Some(format!(
            "Discovery failed for some groups, {} failing: unable to retrieve the complete list of server APIs: {}",
            self.failures.len(),
            parts.join(", ")
        ))
    }
}

/// A group version to fetch, with its place in the group's preference order.
struct Wanted {
    group: String,
    version: String,
    preferred: bool,
}

/// Runs one discovery round. Fails only when the group lists themselves (`/api`,
/// `/apis`) can not be read; a failing group version is recorded in
/// [`Discovered::failures`].
pub async fn discover(client: &Client) -> Result<Discovered, kube::Error> {
    let core = client.list_core_api_versions().await?;
    let groups = client.list_api_groups().await?;
    let mut wanted: Vec<Wanted> = core
        .versions
        .iter()
        .enumerate()
        .map(|(i, version)| Wanted {
            group: String::new(),
            version: version.clone(),
            preferred: i == 0,
        })
        .collect();
    for group in &groups.groups {
        let preferred = group
            .preferred_version
            .as_ref()
            .map(|p| p.version.clone())
            .or_else(|| group.versions.first().map(|v| v.version.clone()));
        for version in &group.versions {
            wanted.push(Wanted {
                group: group.name.clone(),
                version: version.version.clone(),
                preferred: preferred.as_deref() == Some(version.version.as_str()),
            });
        }
    }
    let lists = join_all(wanted.iter().map(|w| async move {
        if w.group.is_empty() {
            client.list_core_api_resources(&w.version).await
        } else {
            client
                .list_api_group_resources(&format!("{}/{}", w.group, w.version))
                .await
        }
    }))
    .await;

    let mut discovered = Discovered::default();
    // group resource -> (index in `preferred`, whether that entry is the preferred version)
    let mut chosen: HashMap<(String, String), (usize, bool)> = HashMap::new();
    for (w, list) in wanted.iter().zip(lists) {
        let list = match list {
            Ok(list) => list,
            Err(error) => {
                discovered.failures.push(GroupVersionFailure {
                    group_version: api_version_of(&w.group, &w.version),
                    error: error.to_string(),
                });
                continue;
            }
        };
        for resource in resources_of(&w.group, &w.version, &list) {
            let resource = Arc::new(resource);
            discovered.all.push(resource.clone());
            let key = (w.group.clone(), resource.api_resource.plural.clone());
            match chosen.get(&key) {
                None => {
                    chosen.insert(key, (discovered.preferred.len(), w.preferred));
                    discovered.preferred.push(resource);
                }
                Some(&(index, false)) if w.preferred => {
                    discovered.preferred[index] = resource;
                    chosen.insert(key, (index, true));
                }
                Some(_) => {}
            }
        }
    }
    Ok(discovered)
}

fn api_version_of(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The top-level resources of one group version's resource list.
fn resources_of(group: &str, version: &str, list: &APIResourceList) -> Vec<ResourceType> {
    list.resources
        .iter()
        .filter(|r| !r.name.contains('/'))
        .map(|r| {
            // A resource may live in another group version than the list it is in
            // (upstream allows it); its own group and version then win.
            let group = r.group.clone().unwrap_or_else(|| group.to_string());
            let version = r.version.clone().unwrap_or_else(|| version.to_string());
            ResourceType {
                api_resource: ApiResource {
                    api_version: api_version_of(&group, &version),
                    group,
                    version,
                    kind: r.kind.clone(),
                    plural: r.name.clone(),
                },
                namespaced: r.namespaced,
                verbs: r.verbs.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;

    fn api_resource(name: &str, kind: &str, namespaced: bool, verbs: &[&str]) -> APIResource {
        APIResource {
            name: name.into(),
            kind: kind.into(),
            namespaced,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn subresources_are_left_out() {
        let list = APIResourceList {
            group_version: "v1".into(),
            resources: vec![
                api_resource("pods", "Pod", true, &["get", "list"]),
                api_resource("pods/status", "Pod", true, &["get"]),
            ],
        };
        let found = resources_of("", "v1", &list);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].api_resource.api_version, "v1");
        assert_eq!(found[0].api_resource.plural, "pods");
        assert!(found[0].namespaced);
        assert_eq!(found[0].to_string(), "/v1, Resource=pods");
        assert_eq!(found[0].group_resource(), "pods");
    }

    #[test]
    fn resolves_kinds_in_any_version_and_reports_failures() {
        let make = |version: &str| {
            Arc::new(ResourceType {
                api_resource: ApiResource {
                    group: "autoscaling".into(),
                    version: version.into(),
                    api_version: format!("autoscaling/{version}"),
                    kind: "HorizontalPodAutoscaler".into(),
                    plural: "horizontalpodautoscalers".into(),
                },
                namespaced: true,
                verbs: vec!["delete".into(), "list".into(), "watch".into()],
            })
        };
        let discovered = Discovered {
            all: vec![make("v2"), make("v1")],
            preferred: vec![make("v2")],
            failures: vec![GroupVersionFailure {
                group_version: "metrics.k8s.io/v1beta1".into(),
                error: "503".into(),
            }],
        };
        let v1 = discovered
            .resolve("autoscaling/v1", "HorizontalPodAutoscaler")
            .unwrap();
        assert_eq!(v1.api_resource.version, "v1");
        assert!(discovered.resolve("autoscaling/v1", "Nope").is_none());
        assert_eq!(
            discovered
                .preferred_supporting(&["delete", "watch"])
                .count(),
            1
        );
        assert_eq!(discovered.preferred_supporting(&["patch"]).count(), 0);
        let message = discovered.failure_message().unwrap();
        assert!(message.starts_with("Discovery failed for some groups, 1 failing:"));
        assert!(message.contains("metrics.k8s.io/v1beta1: 503"));
    }
}
