//! Patches: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes'
//! strategic merge patch.
// Interface fixed by the lead; the body is being written.
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatchError {
    /// The patch document itself is malformed (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The patch is well formed but can not be applied to this object (HTTP 422),
    /// e.g. a JSON patch `test` that fails or a path that does not exist.
    #[error("{0}")]
    Unprocessable(String),
}

/// Applies a JSON patch document (an array of operations) to `target`.
pub fn apply_json_patch(_target: &Value, _patch: &Value) -> Result<Value, PatchError> {
    todo!()
}

/// Applies a JSON merge patch to `target`.
pub fn apply_merge_patch(_target: &Value, _patch: &Value) -> Result<Value, PatchError> {
    todo!()
}

/// Applies a strategic merge patch to `target`, an object of the given kind
/// (`group` is "" for core). Lists are merged by their patch merge key where the
/// Kubernetes type declares one, and the `$patch`, `$retainKeys`,
/// `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` directives are honoured.
pub fn apply_strategic_merge_patch(
    _target: &Value,
    _patch: &Value,
    _group: &str,
    _kind: &str,
) -> Result<Value, PatchError> {
    todo!()
}
