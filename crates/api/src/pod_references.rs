//! What a pod uses by name: the Secrets, ConfigMaps, claims and service account its
//! spec refers to. The API server's Node authorizer lets a node read exactly these,
//! and the node agent watches exactly these, so both read the same list.

use serde_json::{Value, json};

/// The kinds of objects a pod uses by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    Secret,
    ConfigMap,
    Claim,
    /// A PersistentVolume, through a claim.
    Volume,
    ServiceAccount,
}

/// The names of the objects of `kind` (in the pod's namespace) that `pod` uses.
pub fn references(pod: &Value, kind: Reference) -> Vec<String> {
    let spec = &pod["spec"];
    let mut names = Vec::new();
    let mut add = |name: &Value| {
        if let Some(name) = name.as_str().filter(|n| !n.is_empty())
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_string());
        }
    };
    let items = |value: &Value| value.as_array().cloned().unwrap_or_default();
    let containers: Vec<Value> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| items(&spec[*field]))
        .collect();
    let volumes = items(&spec["volumes"]);
    match kind {
        Reference::Secret => {
            for secret in items(&spec["imagePullSecrets"]) {
                add(&secret["name"]);
            }
            for volume in &volumes {
                add(&volume["secret"]["secretName"]);
                for source in items(&volume["projected"]["sources"]) {
                    add(&source["secret"]["name"]);
                }
                for driver in ["csi", "cephfs", "rbd", "iscsi", "flexVolume", "scaleIO"] {
                    add(&volume[driver]["secretRef"]["name"]);
                }
                add(&volume["csi"]["nodePublishSecretRef"]["name"]);
                add(&volume["azureFile"]["secretName"]);
            }
            for container in &containers {
                for env in items(&container["env"]) {
                    add(&env["valueFrom"]["secretKeyRef"]["name"]);
                }
                for from in items(&container["envFrom"]) {
                    add(&from["secretRef"]["name"]);
                }
            }
        }
        Reference::ConfigMap => {
            for volume in &volumes {
                add(&volume["configMap"]["name"]);
                for source in items(&volume["projected"]["sources"]) {
                    add(&source["configMap"]["name"]);
                }
            }
            for container in &containers {
                for env in items(&container["env"]) {
                    add(&env["valueFrom"]["configMapKeyRef"]["name"]);
                }
                for from in items(&container["envFrom"]) {
                    add(&from["configMapRef"]["name"]);
                }
            }
        }
        Reference::Claim | Reference::Volume => {
            let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
            for volume in &volumes {
                add(&volume["persistentVolumeClaim"]["claimName"]);
                if volume.get("ephemeral").is_some_and(Value::is_object) {
                    let name = volume["name"].as_str().unwrap_or("");
                    add(&json!(format!("{pod_name}-{name}")));
                }
            }
        }
        Reference::ServiceAccount => {
            let account = spec["serviceAccountName"].as_str().unwrap_or("default");
            add(&json!(if account.is_empty() {
                "default"
            } else {
                account
            }));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "nodeName": "n1",
                "serviceAccountName": "builder",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "s", "secret": {"secretName": "vol-secret"}},
                    {"name": "c", "configMap": {"name": "vol-cm"}},
                    {"name": "p", "projected": {"sources": [
                        {"secret": {"name": "proj-secret"}}, {"configMap": {"name": "proj-cm"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "claim"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
                ],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                ], "envFrom": [{"configMapRef": {"name": "from-cm"}}]}],
            },
        })
    }

    #[test]
    fn a_pod_references_what_its_spec_names() {
        let pod = pod();
        assert_eq!(
            references(&pod, Reference::Secret),
            vec![
                "pull",
                "vol-secret",
                "proj-secret",
                "env-secret",
                "init-env"
            ]
        );
        assert_eq!(
            references(&pod, Reference::ConfigMap),
            vec!["vol-cm", "proj-cm", "env-cm", "from-cm"]
        );
        assert_eq!(
            references(&pod, Reference::Claim),
            vec!["claim", "web-scratch"]
        );
        assert_eq!(references(&pod, Reference::ServiceAccount), vec!["builder"]);
        let bare = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]}});
        assert!(references(&bare, Reference::Secret).is_empty());
        assert_eq!(
            references(&bare, Reference::ServiceAccount),
            vec!["default"]
        );
    }
}
