//! The volume controllers, after upstream's pkg/controller/volume:
//!
//! - [`binder`]: binds PersistentVolumeClaims to PersistentVolumes (static volumes by
//!   class, access modes, capacity, selector and volumeName; dynamic ones by handing
//!   the claim to its class's provisioner), keeps their phases, and carries out a
//!   released volume's reclaim policy;
//! - [`protection`]: removes the `kubernetes.io/pvc-protection` finalizer once no
//!   pod uses the claim, and `kubernetes.io/pv-protection` once the volume is not
//!   bound;
//! - [`ephemeral`]: creates the claim of every `ephemeral` pod volume, owned by the
//!   pod (the garbage collector deletes it with the pod);
//! - [`expand`]: grows `krust.io/local-path` volumes when their claim asks for more.

pub mod binder;
pub mod ephemeral;
pub mod expand;
pub mod protection;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};

/// Annotations upstream's binder and provisioners write.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// The names of the claims `pod` uses: its persistentVolumeClaim volumes and the
/// claims of its ephemeral volumes (`<pod>-<volume>`).
pub fn claims_of_pod(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|volume| {
            if let Some(source) = &volume.persistent_volume_claim {
                Some(source.claim_name.clone())
            } else {
                volume
                    .ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", volume.name))
            }
        })
        .collect()
}

/// The claim's storage class name ("" for none).
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|spec| spec.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The volume's storage class name ("" for none).
pub fn volume_class(volume: &PersistentVolume) -> &str {
    volume
        .spec
        .as_ref()
        .and_then(|spec| spec.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The phase in a volume's status ("" when none yet).
pub fn volume_phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

/// The claim's phase ("" when none yet).
pub fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}
