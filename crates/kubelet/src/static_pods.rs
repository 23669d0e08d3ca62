//! Static pods: pod manifests (YAML or JSON) in `--pod-manifest-path`, each run on
//! this node and shown in the API as a mirror pod named `<name>-<node>` with the
//! `kubernetes.io/config.mirror` annotation.
//!
//! The directory is read every few seconds. A new file creates its mirror pod, a
//! changed file replaces it, a removed file deletes it; a file that does not parse is
//! reported once (naming the file) and skipped. Unlike upstream, the pod runs from its
//! mirror object through the normal pod worker, so static pods need the API server.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// How often the manifest directory is read.
const SCAN_INTERVAL: Duration = Duration::from_secs(2);

/// Reads one manifest into the mirror pod for `node`.
pub fn mirror_pod(path: &Path, text: &str, node: &str) -> Result<Value> {
    let mut pod: Value = serde_yaml::from_str(text)
        .with_context(|| format!("{}: not a YAML or JSON pod manifest", path.display()))?;
    if pod["kind"] != "Pod" {
        bail!("{}: kind must be Pod, not {}", path.display(), pod["kind"]);
    }
    let name = pod["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .with_context(|| format!("{}: metadata.name is missing", path.display()))?
        .to_string();
    if pod["spec"]["containers"]
        .as_array()
        .is_none_or(|c| c.is_empty())
    {
        bail!(
            "{}: spec.containers must list at least one container",
            path.display()
        );
    }
    let hash = {
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let metadata = pod["metadata"].as_object_mut().expect("checked above");
    metadata.insert("name".into(), json!(format!("{name}-{node}")));
    if metadata
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        metadata.insert("namespace".into(), json!("default"));
    }
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .with_context(|| format!("{}: metadata.annotations must be a map", path.display()))?;
    annotations.insert(MIRROR_ANNOTATION.into(), json!(hash));
    annotations.insert("kubernetes.io/config.hash".into(), json!(hash));
    annotations.insert(SOURCE_ANNOTATION.into(), json!("file"));
    pod["spec"]["nodeName"] = json!(node);
    Ok(pod)
}

/// Keeps the mirror pods in step with the manifest directory; runs until aborted.
pub async fn run(client: kube::Client, dir: std::path::PathBuf, node: String) {
    let mut reported: HashMap<std::path::PathBuf, String> = HashMap::new();
    loop {
        if let Err(error) = sync(&client, &dir, &node, &mut reported).await {
            tracing::warn!(error = format!("{error:#}"), "cannot sync the static pods");
        }
        tokio::time::sleep(SCAN_INTERVAL).await;
    }
}

async fn sync(
    client: &kube::Client,
    dir: &Path,
    node: &str,
    reported: &mut HashMap<std::path::PathBuf, String>,
) -> Result<()> {
    let mut wanted: BTreeMap<(String, String), Value> = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name.starts_with('.')
            || !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        match mirror_pod(&path, &text, node) {
            Ok(pod) => {
                reported.remove(&path);
                let key = (
                    pod["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
                wanted.insert(key, pod);
            }
            Err(error) => {
                let message = format!("{error:#}");
                if reported.get(&path) != Some(&message) {
                    tracing::error!(%message, "skipping a static pod manifest");
                    reported.insert(path, message);
                }
            }
        }
    }
    let all: Api<Pod> = Api::all(client.clone());
    let existing = all
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let mut present: HashMap<(String, String), String> = HashMap::new();
    for pod in existing.items {
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        if annotations.get(SOURCE_ANNOTATION).map(String::as_str) != Some("file") {
            continue;
        }
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let hash = annotations
            .get(MIRROR_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &key.0);
        let stale = match wanted.get(&key) {
            None => true,
            Some(want) => want["metadata"]["annotations"][MIRROR_ANNOTATION] != json!(hash),
        };
        // A stale pod stays in `present` until it is gone, so it is not created twice.
        if stale && pod.metadata.deletion_timestamp.is_none() {
            tracing::info!(pod = %key.1, "deleting a static pod whose manifest changed or went away");
            let _ = api.delete(&key.1, &DeleteParams::default()).await;
        }
        present.insert(key, hash);
    }
    for (key, pod) in wanted {
        if present.contains_key(&key) {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &key.0);
        let pod: Pod =
            serde_json::from_value(pod).with_context(|| format!("static pod {}", key.1))?;
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => tracing::info!(pod = %key.1, "created the mirror pod of a static pod"),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => tracing::warn!(pod = %key.1, %error, "cannot create the mirror pod"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_pod_is_named_after_the_node() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: x}]\n";
        let pod = mirror_pod(Path::new("/m/web.yaml"), text, "n1").unwrap();
        assert_eq!(pod["metadata"]["name"], "web-n1");
        assert_eq!(pod["metadata"]["namespace"], "default");
        assert_eq!(pod["spec"]["nodeName"], "n1");
        assert_eq!(pod["metadata"]["annotations"][SOURCE_ANNOTATION], "file");
        assert!(
            pod["metadata"]["annotations"][MIRROR_ANNOTATION]
                .as_str()
                .unwrap()
                .len()
                == 16
        );
    }

    #[test]
    fn bad_manifests_name_the_file_and_field() {
        let error =
            mirror_pod(Path::new("/m/a.yaml"), "kind: Pod\nmetadata: {}\n", "n").unwrap_err();
        assert_eq!(error.to_string(), "/m/a.yaml: metadata.name is missing");
        let error = mirror_pod(Path::new("/m/b.yaml"), "kind: Service\n", "n").unwrap_err();
        assert!(
            error.to_string().starts_with("/m/b.yaml: kind must be Pod"),
            "{error}"
        );
        let error = mirror_pod(
            Path::new("/m/c.yaml"),
            "kind: Pod\nmetadata: {name: x}\nspec: {}\n",
            "n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("spec.containers"), "{error}");
        assert!(mirror_pod(Path::new("/m/d.yaml"), ": : :", "n").is_err());
    }
}
