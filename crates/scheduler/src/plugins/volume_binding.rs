//! VolumeBinding, after upstream's plugins/volumebinding: a pod fits a node only if
//! every PersistentVolumeClaim it uses can be served there. A bound claim's volume
//! must allow the node (its required node affinity); an unbound claim of a
//! WaitForFirstConsumer class needs an Available volume that fits it and the node,
//! or a class that provisions; an unbound claim of any other class must wait for the
//! binder. Before the pod is bound, [`claims_to_annotate`] names the unbound
//! WaitForFirstConsumer claims that get `volume.kubernetes.io/selected-node`, which
//! tells the binder and the provisioner where the volume has to live.
//!
//! [`restrictions_filter`] is VolumeRestrictions' ReadWriteOncePod rule: such a
//! claim is used by one pod at a time.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use krust_api::volume::claim_fits_volume;

use super::{Cycle, Unfit};
use crate::cache::NodeInfo;
use crate::selectors::{label_selector_matches, node_selector_term_matches};

pub const NAME: &str = "VolumeBinding";
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// The storage objects the plugin looks at, kept by the scheduler's watches.
#[derive(Default)]
pub struct VolumeObjects {
    /// Claims by `namespace/name`.
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    pub classes: HashMap<String, Arc<StorageClass>>,
}

/// The claims a pod uses, by name: its persistentVolumeClaim volumes, and the claim
/// of each ephemeral volume (`<pod>-<volume>`, true for ephemeral).
fn pod_claims(pod: &Pod) -> Vec<(String, bool)> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(
            |volume| match (&volume.persistent_volume_claim, &volume.ephemeral) {
                (Some(source), _) => Some((source.claim_name.clone(), false)),
                (None, Some(_)) => Some((format!("{pod_name}-{}", volume.name), true)),
                _ => None,
            },
        )
        .collect()
}

fn volume_allows(volume: &PersistentVolume, node: &Node) -> bool {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .is_none_or(|required| {
            required
                .node_selector_terms
                .iter()
                .any(|term| node_selector_term_matches(term, node))
        })
}

fn waits_for_consumer(objects: &VolumeObjects, claim: &PersistentVolumeClaim) -> bool {
    let class = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("");
    objects
        .classes
        .get(class)
        .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
}

/// Why `node` cannot serve one of the pod's claims, if it cannot.
pub fn check(objects: &VolumeObjects, pod: &Pod, node: &Node) -> Result<(), Unfit> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    for (name, ephemeral) in pod_claims(pod) {
        let Some(claim) = objects.claims.get(&format!("{namespace}/{name}")) else {
            let reason = if ephemeral {
                format!(
                    "waiting for ephemeral volume controller to create the persistentvolumeclaim \"{name}\""
                )
            } else {
                format!("persistentvolumeclaim \"{name}\" not found")
            };
            return Err(Unfit::unresolvable(NAME, reason));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(Unfit::unresolvable(
                NAME,
                format!("persistentvolumeclaim \"{name}\" is being deleted"),
            ));
        }
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or("");
        if !volume_name.is_empty() {
            match objects.volumes.get(volume_name) {
                None => {
                    return Err(Unfit::unresolvable(
                        NAME,
                        "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)",
                    ));
                }
                Some(volume) if !volume_allows(volume, node) => {
                    return Err(Unfit::unresolvable(
                        NAME,
                        "node(s) had volume node affinity conflict",
                    ));
                }
                Some(_) => continue,
            }
        }
        if !waits_for_consumer(objects, claim) {
            return Err(Unfit::unresolvable(
                NAME,
                "pod has unbound immediate PersistentVolumeClaims",
            ));
        }
        let static_fit = objects.volumes.values().any(|volume| {
            volume.spec.as_ref().is_some_and(|s| s.claim_ref.is_none())
                && volume.metadata.deletion_timestamp.is_none()
                && claim_fits_volume(claim, volume, |selector| {
                    serde_json::from_value(selector.clone()).is_ok_and(|s| {
                        label_selector_matches(
                            &s,
                            volume
                                .metadata
                                .labels
                                .as_ref()
                                .unwrap_or(&Default::default()),
                        )
                    })
                })
                && volume_allows(volume, node)
        });
        let class = claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            .unwrap_or("");
        let provisions = objects
            .classes
            .get(class)
            .is_some_and(|c| c.provisioner != NO_PROVISIONER);
        if !static_fit && !provisions {
            return Err(Unfit::unresolvable(
                NAME,
                "node(s) didn't find available persistent volumes to bind",
            ));
        }
    }
    Ok(())
}

/// VolumeRestrictions' ReadWriteOncePod rule: a claim with that access mode serves one
/// pod at a time, wherever the other pod runs.
pub const RESTRICTIONS: &str = "VolumeRestrictions";

/// Why the pod cannot use its ReadWriteOncePod claims now, if it cannot.
pub fn check_read_write_once_pod(cycle: &Cycle) -> Result<(), Unfit> {
    let pod = &cycle.pod.pod;
    let objects = &cycle.cluster.volumes;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let exclusive: Vec<String> = pod_claims(pod)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            objects
                .claims
                .get(&format!("{namespace}/{name}"))
                .and_then(|c| c.spec.as_ref()?.access_modes.as_ref())
                .is_some_and(|modes| modes.iter().any(|m| m == "ReadWriteOncePod"))
        })
        .collect();
    if exclusive.is_empty() {
        return Ok(());
    }
    let taken = cycle
        .cluster
        .node_infos()
        .iter()
        .flat_map(|n| &n.pods)
        .any(|other| {
            other.key != cycle.pod.key
                && other.namespace == namespace
                && pod_claims(&other.pod)
                    .iter()
                    .any(|(name, _)| exclusive.contains(name))
        });
    if taken {
        return Err(Unfit::unresolvable(
            RESTRICTIONS,
            "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode",
        ));
    }
    Ok(())
}

pub fn restrictions_filter(cycle: &Cycle, _: &NodeInfo) -> Result<(), Unfit> {
    check_read_write_once_pod(cycle)
}

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    match node.node.as_ref() {
        Some(n) => check(&cycle.cluster.volumes, &cycle.pod.pod, n),
        None => Ok(()),
    }
}

/// The pod's unbound WaitForFirstConsumer claims that do not name a node yet
/// (`namespace`, `name`): the scheduler writes the chosen node into them before it
/// binds the pod.
pub fn claims_to_annotate(objects: &VolumeObjects, pod: &Pod) -> Vec<(String, String)> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    pod_claims(pod)
        .into_iter()
        .filter(|(name, _)| {
            objects
                .claims
                .get(&format!("{namespace}/{name}"))
                .is_some_and(|claim| {
                    claim
                        .spec
                        .as_ref()
                        .and_then(|s| s.volume_name.as_deref())
                        .unwrap_or("")
                        .is_empty()
                        && waits_for_consumer(objects, claim)
                        && !claim
                            .metadata
                            .annotations
                            .as_ref()
                            .is_some_and(|a| a.contains_key(SELECTED_NODE))
                })
        })
        .map(|(name, _)| (namespace.clone(), name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objects() -> VolumeObjects {
        let mut objects = VolumeObjects::default();
        for (name, mode, provisioner) in [
            ("wait", "WaitForFirstConsumer", "krust.io/local-path"),
            ("static", "WaitForFirstConsumer", NO_PROVISIONER),
            ("now", "Immediate", "krust.io/local-path"),
        ] {
            let class: StorageClass = serde_json::from_value(json!({
                "metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode,
            }))
            .unwrap();
            objects.classes.insert(name.into(), Arc::new(class));
        }
        objects
    }

    fn add_claim(objects: &mut VolumeObjects, name: &str, class: &str, volume: Option<&str>) {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                     "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap();
        objects.claims.insert(format!("ns/{name}"), Arc::new(claim));
    }

    fn local_volume(name: &str, class: &str, node: &str) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                    "capacity": {"storage": "1Gi"}, "local": {"path": "/data"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            }))
            .unwrap(),
        )
    }

    fn pod(claim: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
        }))
        .unwrap()
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
        )
        .unwrap()
    }

    fn reason(result: Result<(), Unfit>) -> String {
        result
            .err()
            .map(|u| u.reasons.join(","))
            .unwrap_or_default()
    }

    #[test]
    fn claims_decide_which_nodes_fit() {
        let mut objects = objects();
        assert_eq!(
            reason(check(&objects, &pod("missing"), &node("n1"))),
            "persistentvolumeclaim \"missing\" not found"
        );
        add_claim(&mut objects, "later", "wait", None);
        assert!(check(&objects, &pod("later"), &node("n1")).is_ok());
        assert_eq!(
            claims_to_annotate(&objects, &pod("later")),
            [("ns".to_string(), "later".to_string())]
        );

        add_claim(&mut objects, "immediate", "now", None);
        assert_eq!(
            reason(check(&objects, &pod("immediate"), &node("n1"))),
            "pod has unbound immediate PersistentVolumeClaims"
        );

        // A class without a provisioner needs a static volume on the node.
        add_claim(&mut objects, "static", "static", None);
        objects
            .volumes
            .insert("pv1".into(), local_volume("pv1", "static", "n2"));
        assert!(check(&objects, &pod("static"), &node("n2")).is_ok());
        assert_eq!(
            reason(check(&objects, &pod("static"), &node("n1"))),
            "node(s) didn't find available persistent volumes to bind"
        );

        // A bound claim goes where its volume is.
        add_claim(&mut objects, "bound", "static", Some("pv1"));
        assert!(check(&objects, &pod("bound"), &node("n2")).is_ok());
        assert_eq!(
            reason(check(&objects, &pod("bound"), &node("n1"))),
            "node(s) had volume node affinity conflict"
        );
        assert!(claims_to_annotate(&objects, &pod("bound")).is_empty());
    }

    #[test]
    fn a_read_write_once_pod_claim_serves_one_pod() {
        use crate::cache::{ClusterCache, PodInfo};
        let mut cluster = ClusterCache::default();
        cluster.upsert_node(Arc::new(node("n1")));
        let mut exclusive: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "solo", "namespace": "ns"},
            "spec": {"accessModes": ["ReadWriteOncePod"], "storageClassName": "wait"},
        }))
        .unwrap();
        cluster
            .volumes
            .claims
            .insert("ns/solo".into(), Arc::new(exclusive.clone()));
        let first = PodInfo::new(Arc::new(pod("solo")), |_| None);
        let mut second_pod = pod("solo");
        second_pod.metadata.name = Some("q".into());
        let second = PodInfo::new(Arc::new(second_pod), |_| None);
        assert!(check_read_write_once_pod(&Cycle::new(&second, &cluster)).is_ok());
        cluster.assume(Arc::new(first), "n1");
        let unfit = check_read_write_once_pod(&Cycle::new(&second, &cluster)).unwrap_err();
        assert_eq!(unfit.plugin, RESTRICTIONS);
        // ReadWriteOnce claims may be shared by pods.
        exclusive.spec.as_mut().unwrap().access_modes = Some(vec!["ReadWriteOnce".into()]);
        cluster
            .volumes
            .claims
            .insert("ns/solo".into(), Arc::new(exclusive));
        assert!(check_read_write_once_pod(&Cycle::new(&second, &cluster)).is_ok());
    }
}
