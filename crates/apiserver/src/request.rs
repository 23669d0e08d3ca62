//! Reading a request: its path (which resource, namespace, name, subresource), its
//! query parameters and its body (JSON or YAML, size-limited).

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::BodyExt;
use krust_api::resources::{self, ResourceInfo};
use serde_json::Value;

use crate::errors::{ApiError, ApiResult};

/// Largest request body accepted, as upstream (3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Where a request points in the API.
#[derive(Debug, Clone)]
pub enum Target {
    /// `/api`, `/apis`, `/api/v1`, `/apis/<group>`, `/apis/<group>/<version>`.
    Discovery(DiscoveryPath),
    /// A resource, collection or subresource.
    Resource(ResourcePath),
    /// `/version`, `/healthz`, ... and the OpenAPI documents.
    NonResource(String),
}

#[derive(Debug, Clone)]
pub enum DiscoveryPath {
    LegacyVersions,
    Groups,
    Group(String),
    GroupVersion(String, String),
}

#[derive(Debug, Clone)]
pub struct ResourcePath {
    pub resource: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses a request path.
pub fn parse_path(path: &str) -> ApiResult<Target> {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["api"] => Ok(Target::Discovery(DiscoveryPath::LegacyVersions)),
        ["apis"] => Ok(Target::Discovery(DiscoveryPath::Groups)),
        ["api", version] => Ok(Target::Discovery(DiscoveryPath::GroupVersion(
            String::new(),
            version.to_string(),
        ))),
        ["apis", group] => Ok(Target::Discovery(DiscoveryPath::Group(group.to_string()))),
        ["apis", group, version] => Ok(Target::Discovery(DiscoveryPath::GroupVersion(
            group.to_string(),
            version.to_string(),
        ))),
        ["api", version, rest @ ..] => resource_path("", version, rest),
        ["apis", group, version, rest @ ..] => resource_path(group, version, rest),
        _ => Ok(Target::NonResource(format!("/{}", parts.join("/")))),
    }
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let find =
        |plural: &str| resources::find(group, version, plural).ok_or_else(ApiError::path_not_found);
    let make = |resource: &'static ResourceInfo,
                namespace: Option<&str>,
                name: Option<&str>,
                sub: Option<&str>| {
        Ok(Target::Resource(ResourcePath {
            resource,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        }))
    };
    match rest {
        ["namespaces", namespace, plural, tail @ ..]
            if resources::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            let resource = find(plural)?;
            match tail {
                [] => make(resource, Some(namespace), None, None),
                [name] => make(resource, Some(namespace), Some(name), None),
                [name, sub, ..] => make(resource, Some(namespace), Some(name), Some(sub)),
            }
        }
        [plural, tail @ ..] => {
            let resource = find(plural)?;
            match tail {
                [] => make(resource, None, None, None),
                [name] => make(resource, None, Some(name), None),
                [name, sub, ..] => make(resource, None, Some(name), Some(sub)),
            }
        }
        [] => Err(ApiError::path_not_found()),
    }
}

/// Query parameters, decoded.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut map = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            map.insert(decode(key), decode(value));
        }
        Query(map)
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.0.get(key).map(String::as_str), Some("true" | "1"))
    }
    pub fn number(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value for {key}: {text:?} is not an integer"
                ))
            }),
        }
    }
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}: supported values are \"All\""
            ))),
        }
    }
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`].
pub async fn read_body(body: hyper::body::Incoming) -> ApiResult<Bytes> {
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(
            "Request entity too large: limit is 3145728",
        )),
        Err(error) => Err(ApiError::bad_request(format!(
            "reading the request body failed: {error}"
        ))),
    }
}

/// The media type of a Content-Type header, without parameters.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a JSON or YAML body into a JSON object.
pub fn decode_body(bytes: &[u8], media_type: &str) -> ApiResult<Value> {
    let value: Value = match media_type {
        "application/json"
        | ""
        | "*/*"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        })?,
        "application/yaml" | "application/apply-patch+yaml" => {
            let yaml: serde_yaml::Value = serde_yaml::from_slice(bytes).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as YAML: {e}"
                ))
            })?;
            serde_json::to_value(yaml).map_err(|e| {
                ApiError::bad_request(format!("the YAML body can not be represented as JSON: {e}"))
            })?
        }
        media if crate::protobuf::is_protobuf(media) => {
            crate::protobuf::decode(bytes).map_err(ApiError::bad_request)?
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_resources() {
        let Target::Resource(p) = parse_path("/api/v1/namespaces/default/pods/web/status").unwrap()
        else {
            panic!()
        };
        assert_eq!(p.resource.plural, "pods");
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let Target::Resource(p) = parse_path("/api/v1/namespaces/kube-system").unwrap() else {
            panic!()
        };
        assert_eq!(p.resource.plural, "namespaces");
        assert_eq!(p.name.as_deref(), Some("kube-system"));
        let Target::Resource(p) = parse_path("/api/v1/namespaces/x/finalize").unwrap() else {
            panic!()
        };
        assert_eq!(p.subresource.as_deref(), Some("finalize"));
        let Target::Resource(p) = parse_path("/apis/apps/v1/deployments").unwrap() else {
            panic!()
        };
        assert!(p.namespace.is_none() && p.name.is_none());
        assert!(parse_path("/apis/apps/v1/nosuch").is_err());
        assert!(matches!(
            parse_path("/version").unwrap(),
            Target::NonResource(_)
        ));
    }

    #[test]
    fn query_decodes() {
        let q = Query::parse(Some("labelSelector=app%3Dweb&watch=true&limit=5"));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert!(q.flag("watch"));
        assert_eq!(q.number("limit").unwrap(), Some(5));
        assert!(Query::parse(Some("limit=x")).number("limit").is_err());
    }
}
