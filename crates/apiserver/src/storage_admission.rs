//! Upstream's storage admission plugins (plugin/pkg/admission/storage), applied on
//! create before validation:
//!
//! - DefaultStorageClass: a PersistentVolumeClaim created without
//!   `spec.storageClassName` gets the default StorageClass (the one annotated
//!   `storageclass.kubernetes.io/is-default-class: "true"`; the newest one when
//!   several are), and none when there is no default. An explicit `""` stays.
//! - StorageObjectInUseProtection: every new PersistentVolumeClaim gets the
//!   `kubernetes.io/pvc-protection` finalizer and every new PersistentVolume
//!   `kubernetes.io/pv-protection`, which the protection controllers remove once the
//!   object is no longer in use.
//! - PersistentVolumeClaimResize: a claim's storage request may grow only when the
//!   claim is bound and its class has `allowVolumeExpansion: true`, and never shrink
//!   below what the claim has (`status.capacity`).

use krust_api::resources::{self, ResourceInfo};
use krust_store::{ListOptions, Store};
use serde_json::{Value, json};

use krust_api::Cause;

use crate::errors::{ApiError, ApiResult};

/// The annotation that marks the default StorageClass.
pub const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Runs the storage admission plugins on an object about to be created.
pub async fn admit_create(
    store: &dyn Store,
    resource: &ResourceInfo,
    object: &mut Value,
) -> ApiResult<()> {
    if !resource.group.is_empty() {
        return Ok(());
    }
    match resource.plural {
        "persistentvolumeclaims" => {
            add_finalizer(object, PVC_PROTECTION);
            if object["spec"]["storageClassName"].is_null() {
                let classes = storage_classes(store).await?;
                if let Some(name) = default_class(&classes) {
                    object["spec"]["storageClassName"] = json!(name);
                }
            }
        }
        "persistentvolumes" => add_finalizer(object, PV_PROTECTION),
        _ => {}
    }
    Ok(())
}

/// Runs the storage admission plugins on an update of `old` to `new`.
pub async fn admit_update(
    store: &dyn Store,
    resource: &ResourceInfo,
    subresource: Option<&str>,
    old: &Value,
    new: &Value,
) -> ApiResult<()> {
    if !resource.group.is_empty()
        || resource.plural != "persistentvolumeclaims"
        || subresource.is_some()
    {
        return Ok(());
    }
    let name = new["metadata"]["name"].as_str().unwrap_or("");
    if !spec_change_allowed(&old["spec"], &new["spec"]) {
        let cause = Cause::new(
            "FieldValueForbidden",
            "spec",
            "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        );
        return Err(ApiError::invalid(
            "",
            "PersistentVolumeClaim",
            name,
            vec![cause],
        ));
    }
    let request = |claim: &Value| {
        claim["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .and_then(krust_api::volume::quantity_bytes)
            .unwrap_or(0.0)
    };
    let (before, after) = (request(old), request(new));
    if after == before {
        return Ok(());
    }
    let capacity = new["status"]["capacity"]["storage"]
        .as_str()
        .and_then(krust_api::volume::quantity_bytes);
    if let Some(capacity) = capacity
        && after < capacity
    {
        let cause = Cause::new(
            "FieldValueForbidden",
            "spec.resources.requests.storage",
            "Forbidden: field can not be less than status.capacity",
        );
        return Err(ApiError::invalid(
            "",
            "PersistentVolumeClaim",
            name,
            vec![cause],
        ));
    }
    if after < before {
        return Ok(());
    }
    let class_name = new["spec"]["storageClassName"].as_str().unwrap_or("");
    let expandable = !class_name.is_empty()
        && storage_classes(store).await?.iter().any(|class| {
            class["metadata"]["name"] == class_name && class["allowVolumeExpansion"] == json!(true)
        });
    let bound = new["spec"]["volumeName"]
        .as_str()
        .is_some_and(|v| !v.is_empty());
    if !bound || !expandable {
        return Err(ApiError::forbidden(format!(
            "persistentvolumeclaims \"{name}\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize; set allowVolumeExpansion: true on StorageClass {class_name:?}"
        )));
    }
    Ok(())
}

/// Whether a claim's spec may change from `old` to `new`: only the storage request,
/// the volume attributes class, and volumeName while it is still unset.
fn spec_change_allowed(old: &Value, new: &Value) -> bool {
    let strip = |spec: &Value, keep_volume_name: bool| {
        let mut spec = spec.clone();
        if let Some(map) = spec.as_object_mut() {
            map.remove("volumeAttributesClassName");
            if !keep_volume_name {
                map.remove("volumeName");
            }
            if let Some(requests) = map.get_mut("resources").and_then(Value::as_object_mut) {
                requests.remove("requests");
                if requests.is_empty() {
                    map.remove("resources");
                }
            }
        }
        spec
    };
    let volume_name_was_set = old["volumeName"].as_str().is_some_and(|v| !v.is_empty());
    strip(old, volume_name_was_set) == strip(new, volume_name_was_set)
}

async fn storage_classes(store: &dyn Store) -> ApiResult<Vec<Value>> {
    let resource = resources::builtin()
        .iter()
        .find(|r| r.group == "storage.k8s.io" && r.plural == "storageclasses")
        .expect("storageclasses is a built-in resource");
    let listed = store
        .list(&resource.key_prefix(), ListOptions::default())
        .await?;
    Ok(listed
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// The name of the default class among `classes`: the newest one marked default
/// (by creationTimestamp, then name), as upstream picks when several are.
pub fn default_class(classes: &[Value]) -> Option<String> {
    classes
        .iter()
        .filter(|class| {
            class["metadata"]["annotations"][IS_DEFAULT_CLASS]
                .as_str()
                .is_some_and(|value| value.eq_ignore_ascii_case("true"))
        })
        .max_by(|a, b| {
            let stamp = |c: &Value| {
                c["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            };
            let name = |c: &Value| c["metadata"]["name"].as_str().unwrap_or("").to_string();
            (stamp(a), name(b)).cmp(&(stamp(b), name(a)))
        })
        .and_then(|class| class["metadata"]["name"].as_str().map(str::to_string))
}

fn add_finalizer(object: &mut Value, finalizer: &str) {
    let metadata = &mut object["metadata"];
    if !metadata["finalizers"].is_array() {
        metadata["finalizers"] = json!([]);
    }
    let finalizers = metadata["finalizers"]
        .as_array_mut()
        .expect("just made an array");
    if !finalizers.iter().any(|f| f == finalizer) {
        finalizers.push(json!(finalizer));
    }
}

/// The StorageClass every cluster starts with: `local-path`, the default, served by
/// the node agents' built-in `krust.io/local-path` provisioner.
pub fn local_path_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "local-path", "annotations": {IS_DEFAULT_CLASS: "true"}},
        "provisioner": "krust.io/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, default: Option<&str>, created: &str) -> Value {
        let mut class = json!({"metadata": {"name": name, "creationTimestamp": created}});
        if let Some(value) = default {
            class["metadata"]["annotations"] = json!({IS_DEFAULT_CLASS: value});
        }
        class
    }

    #[test]
    fn the_newest_class_marked_default_is_the_default() {
        assert_eq!(default_class(&[]), None);
        let classes = [
            class("plain", None, "2026-01-03T00:00:00Z"),
            class("old", Some("true"), "2026-01-01T00:00:00Z"),
            class("new", Some("true"), "2026-01-02T00:00:00Z"),
            class("off", Some("false"), "2026-01-04T00:00:00Z"),
        ];
        assert_eq!(default_class(&classes).as_deref(), Some("new"));
        assert_eq!(default_class(&classes[..1]), None);
    }

    #[test]
    fn only_requests_and_an_unset_volume_name_may_change() {
        let spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        let mut grown = spec.clone();
        grown["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(spec_change_allowed(&spec, &grown));
        let mut named = spec.clone();
        named["volumeName"] = json!("pv1");
        assert!(spec_change_allowed(&spec, &named));
        let mut renamed = named.clone();
        renamed["volumeName"] = json!("pv2");
        assert!(!spec_change_allowed(&named, &renamed));
        let mut modes = spec.clone();
        modes["accessModes"] = json!(["ReadWriteMany"]);
        assert!(!spec_change_allowed(&spec, &modes));
    }

    #[test]
    fn finalizers_are_added_once() {
        let mut object = json!({"metadata": {"finalizers": ["other"]}});
        add_finalizer(&mut object, PVC_PROTECTION);
        add_finalizer(&mut object, PVC_PROTECTION);
        assert_eq!(
            object["metadata"]["finalizers"],
            json!(["other", PVC_PROTECTION])
        );
    }
}
