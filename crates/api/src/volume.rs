//! What the binder and the scheduler's VolumeBinding plugin both need to know about
//! PersistentVolumes: whether a volume can serve a claim (class, volume mode, access
//! modes, capacity, selector), and storage quantities in bytes.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde_json::Value;

/// A storage quantity ("10Gi", "500M", "1e9") in bytes; None when malformed.
pub fn quantity_bytes(text: &str) -> Option<f64> {
    crate::table::quantity_value(text)
}

/// The volume's `spec.capacity.storage` in bytes (0 when missing).
pub fn volume_capacity(volume: &PersistentVolume) -> f64 {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| quantity_bytes(&q.0))
        .unwrap_or(0.0)
}

/// The claim's `resources.requests.storage` in bytes (0 when missing).
pub fn claim_request(claim: &PersistentVolumeClaim) -> f64 {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| quantity_bytes(&q.0))
        .unwrap_or(0.0)
}

/// Whether `volume` can serve `claim` by class, volume mode, access modes, capacity
/// and the claim's selector (`selects` answers for a non-empty selector, as JSON).
/// Who holds the volume and where it lives are for the caller to check.
pub fn claim_fits_volume(
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
    selects: impl Fn(&Value) -> bool,
) -> bool {
    let (Some(claim_spec), Some(spec)) = (claim.spec.as_ref(), volume.spec.as_ref()) else {
        return false;
    };
    let class = |c: &Option<String>| c.clone().unwrap_or_default();
    if class(&claim_spec.storage_class_name) != class(&spec.storage_class_name) {
        return false;
    }
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    if mode(&claim_spec.volume_mode) != mode(&spec.volume_mode) {
        return false;
    }
    let offered = spec.access_modes.clone().unwrap_or_default();
    if !claim_spec
        .access_modes
        .iter()
        .flatten()
        .all(|wanted| offered.contains(wanted))
    {
        return false;
    }
    if volume_capacity(volume) < claim_request(claim) {
        return false;
    }
    match &claim_spec.selector {
        Some(selector) => {
            let selector = serde_json::to_value(selector).unwrap_or(Value::Null);
            let empty = selector
                .as_object()
                .is_none_or(|s| s.values().all(is_empty));
            empty || selects(&selector)
        }
        None => true,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_read_in_bytes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1073741824.0));
        assert_eq!(quantity_bytes("500M"), Some(5e8));
        assert_eq!(quantity_bytes("1e3"), Some(1000.0));
        assert_eq!(quantity_bytes("12"), Some(12.0));
        assert_eq!(quantity_bytes("1Zi"), None);
        assert_eq!(quantity_bytes("lots"), None);
    }
}
