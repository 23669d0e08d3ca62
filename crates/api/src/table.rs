//! Server-side printing: the columns and cells of `meta.k8s.io/v1` Tables, as
//! kube-apiserver prints each built-in resource (`kubectl get`, `-o wide`).
// Interface fixed by the lead; the body is being written.
use chrono::{DateTime, Utc};
use serde_json::Value;

/// One column definition of a Table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0 for the default view, 1 for columns only `-o wide` shows.
    pub priority: i32,
}

/// The columns of a resource (`group` is "" for core, `plural` e.g. "pods").
/// Resources without their own printer get NAME and AGE (CREATED AT-style default).
pub fn columns(_group: &str, _plural: &str) -> Vec<Column> {
    todo!()
}

/// The cells of one object's row, in the order of [`columns`], as of `now`.
pub fn cells(_group: &str, _plural: &str, _object: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    todo!()
}
