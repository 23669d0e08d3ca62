//! One generic handler per verb, for every resource: get, list, create, update,
//! patch, delete, deletecollection, plus the status, scale and binding
//! subresources. What is specific to a resource comes from its row in the resource
//! table; everything else (metadata, resourceVersion, finalizers, dry-run, field
//! validation, selectors, paging) is handled here once.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http::{Method, Request, Response, header};
use hyper::body::Incoming;
use krust_api::patch::{self, PatchError};
use krust_api::resources::{self, ResourceInfo};
use krust_api::selector::{FieldSelector, LabelSelector};
use krust_api::{Cause, apply, convert, defaults, table, validation};
use krust_store::{KeyValue, Revision, Store};
use serde_json::{Map, Value, json};

use crate::auth::{self, Attributes, User};
use crate::cache::{CachedObject, WatchCache, set_resource_version};
use crate::errors::{ApiError, ApiResult, qualified};
use crate::request::{self, Query, ResourcePath};
use crate::server::{Body, bytes_response, error_response, json_response};

/// How many times a patch or an internal read-modify-write is retried on conflict.
const CONFLICT_RETRIES: usize = 8;

/// The API's state shared by all requests.
pub struct Api {
    pub store: Arc<dyn Store>,
    pub cache: Arc<WatchCache>,
    /// The address clients reach the server at (for `/api`).
    pub address: String,
    pub tokens: Arc<auth::TokenAuthenticator>,
    /// Where Services get their ClusterIPs and NodePorts ([`crate::service_alloc`]).
    pub service_ranges: crate::service_alloc::ServiceRanges,
    /// TLS client towards kubelets (pods/log); None when not configured.
    pub kubelet_client: Option<Arc<rustls::ClientConfig>>,
}

/// Everything a verb handler needs about the request.
pub struct Call {
    pub resource: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub query: Query,
    pub accept: String,
    pub content_type: String,
    pub user: User,
    /// Who owns the fields this request writes (`fieldManager`, else the client's
    /// program name from its User-Agent).
    pub field_manager: String,
}

impl Call {
    fn key(&self) -> String {
        object_key(
            self.resource,
            self.namespace.as_deref(),
            self.name.as_deref().unwrap_or(""),
        )
    }
    fn collection_prefix(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}{ns}/", self.resource.key_prefix()),
            None => self.resource.key_prefix(),
        }
    }
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
    fn not_found(&self) -> ApiError {
        ApiError::not_found(self.resource.group, self.resource.plural, self.name())
    }
    /// 409: the object changed since the client read it.
    fn modified(&self) -> ApiError {
        ApiError::modified(self.resource.group, self.resource.plural, self.name())
    }
}

/// The store key of an object.
pub fn object_key(resource: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if resource.namespaced => format!("{}{ns}/{name}", resource.key_prefix()),
        _ => format!("{}{name}", resource.key_prefix()),
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn metadata(object: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    object
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().unwrap()
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    metadata(object)
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn finalizers(object: &Value) -> Vec<String> {
    metadata(object)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The stored form of an object: no resourceVersion (the store's revision is it).
fn encode_for_store(object: &Value) -> Bytes {
    let mut stored = object.clone();
    metadata_mut(&mut stored).remove("resourceVersion");
    Bytes::from(serde_json::to_vec(&stored).unwrap_or_default())
}

fn from_kv(kv: &KeyValue) -> ApiResult<Value> {
    let mut value: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    set_resource_version(&mut value, kv.mod_revision);
    Ok(value)
}

/// Whether objects of this resource are stored in another version than this one.
pub fn needs_conversion(resource: &ResourceInfo) -> bool {
    convert::storage_api_version(resource.group, resource.plural)
        .is_some_and(|v| v != resource.api_version())
}

/// An object of the request's version in the storage version.
fn to_storage(resource: &ResourceInfo, object: Value) -> Value {
    match convert::storage_api_version(resource.group, resource.plural) {
        Some(storage) if storage != resource.api_version() => convert::convert(&object, storage),
        _ => object,
    }
}

/// A stored object in the version the request is for.
pub fn to_request(resource: &ResourceInfo, object: &Value) -> Value {
    if needs_conversion(resource) {
        convert::convert(object, &resource.api_version())
    } else {
        object.clone()
    }
}

/// Objects of a list with their keys, in key order.
type Listed = Vec<(String, Arc<CachedObject>)>;

/// A continue token: the revision of the list and the last key returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: Revision,
    start: String,
}

fn encode_continue(revision: Revision, key: &str) -> String {
    let token = serde_json::to_vec(&ContinueToken {
        rv: revision,
        start: key.to_string(),
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
}

fn decode_continue(text: &str) -> ApiResult<ContinueToken> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "continue key is not valid: the continue token can not be decoded",
            )
        })
}

/// Label and field selectors of a request.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn from_query(query: &Query, resource: &ResourceInfo) -> ApiResult<Selectors> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        fields
            .validate_for(resource.group, resource.plural)
            .map_err(ApiError::bad_request)?;
        Ok(Selectors { labels, fields })
    }
    /// Whether a cached object matches, parsing it only when a field selector
    /// needs more than its name and namespace.
    pub fn matches(&self, object: &CachedObject) -> bool {
        if !self.labels.matches(object.labels.as_ref()) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        let metadata_only = self
            .fields
            .terms()
            .iter()
            .all(|t| t.field == "metadata.name" || t.field == "metadata.namespace");
        if metadata_only {
            let mut names = json!({"metadata": {"name": object.name}});
            if !object.namespace.is_empty() {
                names["metadata"]["namespace"] = json!(object.namespace);
            }
            return self.fields.matches(&names);
        }
        self.fields.matches(&object.value())
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

impl Api {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<WatchCache>,
        address: String,
        tokens: Arc<auth::TokenAuthenticator>,
        service_ranges: crate::service_alloc::ServiceRanges,
    ) -> Api {
        Api {
            store,
            cache,
            address,
            tokens,
            service_ranges,
            kubelet_client: None,
        }
    }

    /// Authorizes and serves one resource request.
    pub async fn handle_resource(
        &self,
        req: Request<Incoming>,
        path: ResourcePath,
        user: User,
    ) -> Response<Body> {
        let header = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let mut call = Call {
            resource: path.resource,
            namespace: path.namespace,
            name: path.name,
            subresource: path.subresource,
            query: Query::parse(req.uri().query()),
            accept: header(header::ACCEPT),
            content_type: header(header::CONTENT_TYPE),
            user,
            field_manager: String::new(),
        };
        call.field_manager = match call.query.get("fieldManager") {
            Some(manager) => manager.to_string(),
            None => {
                let agent = header(header::USER_AGENT);
                let program = agent.split('/').next().unwrap_or("").trim();
                if program.is_empty() {
                    "unknown".to_string()
                } else {
                    program.to_string()
                }
            }
        };
        let method = req.method().clone();
        let verb = match (&method, call.name.is_some()) {
            (&Method::GET, false) if call.query.flag("watch") => "watch",
            (&Method::GET, false) => "list",
            (&Method::GET, true) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, true) => "update",
            (&Method::PATCH, true) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => {
                return error_response(&ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({})",
                    call.resource.plural
                )));
            }
        };
        let attributes = Attributes {
            verb: verb.to_string(),
            group: call.resource.group.to_string(),
            resource: call.resource.plural.to_string(),
            subresource: call.subresource.clone().unwrap_or_default(),
            namespace: call.namespace.clone().unwrap_or_default(),
            // As upstream, a list or watch of one object by `metadata.name=` is
            // authorized as a request for that object.
            name: match &call.name {
                Some(name) => name.clone(),
                None if matches!(verb, "list" | "watch") => {
                    single_name_selector(call.query.get("fieldSelector").unwrap_or(""))
                }
                None => String::new(),
            },
            path: None,
        };
        if !auth::authorize(&self.cache, &call.user, &attributes) {
            return error_response(&forbidden(&call.user, &attributes));
        }
        // A stream into a pod opened with GET (WebSocket) also needs `create`, as a
        // POST (SPDY) does: being allowed to read pods/exec does not let one run
        // commands (upstream's AuthorizePodWebsocketUpgradeCreatePermission).
        if verb == "get" && is_pod_stream(&call) {
            let create = Attributes {
                verb: "create".into(),
                ..attributes.clone()
            };
            if !auth::authorize(&self.cache, &call.user, &create) {
                return error_response(&forbidden(&call.user, &create));
            }
        }
        if call.resource.group == crate::metrics_api::GROUP {
            return match verb {
                "get" | "list" => crate::metrics_api::serve(self, &call).await,
                _ => Err(ApiError::method_not_allowed(format!(
                    "resource metrics are read-only: {verb} is not allowed on {}.{}",
                    call.resource.plural, call.resource.group
                ))),
            }
            .unwrap_or_else(|error| error_response(&error));
        }
        if call.resource.plural == "nodes"
            && verb == "get"
            && call.subresource.as_deref() == Some("proxy")
        {
            let prefix = format!("/api/v1/nodes/{}/proxy", call.name());
            let rest = req.uri().path().strip_prefix(&prefix).unwrap_or("");
            let mut path = if rest.is_empty() {
                "/".to_string()
            } else {
                rest.to_string()
            };
            if let Some(query) = req.uri().query() {
                path = format!("{path}?{query}");
            }
            return self
                .node_proxy(&call, &path)
                .await
                .unwrap_or_else(|error| error_response(&error));
        }
        if call.resource.plural == "pods"
            && verb == "get"
            && call.subresource.as_deref() == Some("log")
            && crate::websocket::is_websocket_request(req.headers())
        {
            return self
                .pod_log_websocket(&call, req)
                .await
                .unwrap_or_else(|error| error_response(&error));
        }
        if matches!(verb, "get" | "create") && is_pod_stream(&call) {
            return self
                .pod_stream(&call, req)
                .await
                .unwrap_or_else(|error| error_response(&error));
        }
        let body = if matches!(
            method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            match request::read_body(req.into_body()).await {
                Ok(body) => body,
                Err(error) => return error_response(&error),
            }
        } else {
            Bytes::new()
        };
        let result = match verb {
            "watch" => return crate::watch::serve_watch(self, &call).await,
            "list" => self.list(&call).await,
            "get" => self.get(&call).await,
            "create" => self.create(&call, &body).await,
            "update" => self.update(&call, &body).await,
            "patch" => self.patch(&call, &body).await,
            "delete" => self.delete(&call, &body).await,
            _ => self.delete_collection(&call, &body).await,
        };
        result.unwrap_or_else(|error| error_response(&error))
    }

    /// Answers with one object and the request's warnings.
    fn respond_warned(
        &self,
        call: &Call,
        code: u16,
        object: &Value,
        warnings: &[String],
    ) -> ApiResult<Response<Body>> {
        let mut response = self.respond(call, code, object)?;
        add_warnings(&mut response, warnings);
        Ok(response)
    }

    /// Answers with one object in the form the client asked for.
    fn respond(&self, call: &Call, code: u16, object: &Value) -> ApiResult<Response<Body>> {
        let object = &to_request(call.resource, object);
        if wants_table(&call.accept) && call.subresource.is_none() {
            let rows = vec![object.clone()];
            let rv = meta_str(object, "resourceVersion").to_string();
            return Ok(json_response(code, &table_of(call, &rows, &rv, None, true)));
        }
        Ok(json_response(code, object))
    }
}

/// A `meta.k8s.io/v1` Table of the objects.
pub fn table_of(
    call: &Call,
    objects: &[Value],
    rv: &str,
    continue_token: Option<&str>,
    with_columns: bool,
) -> Value {
    let group = call.resource.group;
    let plural = call.resource.plural;
    let include = call.query.get("includeObject").unwrap_or("Metadata");
    let now = Utc::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut row = json!({"cells": table::cells(group, plural, object, now)});
            match include {
                "None" => {}
                "Object" => row["object"] = object.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
            row
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(token) = continue_token {
        meta["continue"] = json!(token);
    }
    let columns = if with_columns {
        json!(table::columns(group, plural))
    } else {
        json!([])
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

impl Api {
    async fn read(&self, key: &str) -> ApiResult<Option<KeyValue>> {
        Ok(self.store.get(key).await?)
    }

    async fn get(&self, call: &Call) -> ApiResult<Response<Body>> {
        let kv = self
            .read(&call.key())
            .await?
            .ok_or_else(|| call.not_found())?;
        let object = from_kv(&kv)?;
        match call.subresource.as_deref() {
            None | Some("status") => self.respond(call, 200, &object),
            Some("scale") => Ok(json_response(200, &scale_of(call.resource, &object)?)),
            Some(other) => self.node_subresource(call, other, &object).await,
        }
    }

    /// Log, exec, attach, port-forward and proxy go to the pod's node agent.
    async fn node_subresource(
        &self,
        call: &Call,
        sub: &str,
        object: &Value,
    ) -> ApiResult<Response<Body>> {
        if !call.resource.subresources.contains(&sub) {
            return Err(ApiError::path_not_found());
        }
        let node = object["spec"]["nodeName"].as_str().unwrap_or("");
        if call.resource.plural == "pods" && node.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {} does not have a host assigned",
                call.name()
            )));
        }
        if call.resource.plural == "pods"
            && sub == "log"
            && let Some(client) = &self.kubelet_client
        {
            let node_object = self.node_of(object).await?;
            return crate::kubelet_proxy::pod_log(
                client.clone(),
                object,
                node_object.as_ref(),
                &call.query,
            )
            .await;
        }
        Err(ApiError::new_service_unavailable(format!(
            "{sub} of {} {:?} needs the node agent of node {node:?}, which is not reachable from this server",
            call.resource.plural,
            call.name()
        )))
    }

    /// For a call on the pod of `call` that its node agent answers (`what`: log,
    /// exec, ...): the pod, the kubelet client and the pod's Node object. A missing
    /// pod is 404, one not yet scheduled 400, and a server without a kubelet client 503.
    async fn pod_on_its_node(
        &self,
        call: &Call,
        what: &str,
    ) -> ApiResult<(Value, Arc<rustls::ClientConfig>, Option<Value>)> {
        let kv = self
            .read(&call.key())
            .await?
            .ok_or_else(|| call.not_found())?;
        let pod = from_kv(&kv)?;
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {} does not have a host assigned",
                call.name()
            )));
        }
        let Some(client) = &self.kubelet_client else {
            return Err(ApiError::new_service_unavailable(format!(
                "{what} of pod {:?} needs the node agent of node {node:?}, which is not reachable from this server",
                call.name()
            )));
        };
        let node_object = self.node_of(&pod).await?;
        Ok((pod, client.clone(), node_object))
    }

    /// The Node object a pod is bound to, if it exists.
    async fn node_of(&self, pod: &Value) -> ApiResult<Option<Value>> {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        let node_key = object_key(
            resources::find("", "v1", "nodes").expect("nodes are built in"),
            None,
            node,
        );
        match self.read(&node_key).await? {
            Some(kv) => Ok(Some(from_kv(&kv)?)),
            None => Ok(None),
        }
    }

    /// `nodes/<name>/proxy/<path>`: a GET relayed to the node's kubelet.
    async fn node_proxy(&self, call: &Call, path: &str) -> ApiResult<Response<Body>> {
        let kv = self
            .read(&call.key())
            .await?
            .ok_or_else(|| call.not_found())?;
        let node = from_kv(&kv)?;
        let Some(client) = &self.kubelet_client else {
            return Err(ApiError::new_service_unavailable(format!(
                "node {:?} cannot be proxied: this server has no kubelet client certificate",
                call.name()
            )));
        };
        crate::kubelet_proxy::node_proxy(client.clone(), &node, path).await
    }

    /// `pods/<name>/log` to a WebSocket client: the log from the node agent, sent as
    /// messages (`crate::websocket`). A missing pod, a bad container or subprotocol
    /// and an unreachable kubelet are plain error answers, before any upgrade.
    async fn pod_log_websocket(
        &self,
        call: &Call,
        mut req: Request<Incoming>,
    ) -> ApiResult<Response<Body>> {
        let (pod, client, node_object) = self.pod_on_its_node(call, "log").await?;
        let handshake = crate::websocket::Handshake::from_headers(req.headers())?;
        let log =
            crate::kubelet_proxy::pod_log_stream(client, &pod, node_object.as_ref(), &call.query)
                .await?;
        Ok(handshake.stream(hyper::upgrade::on(&mut req), log))
    }

    /// `pods/<name>/exec`, `attach` and `portforward`: an upgrade relayed to the node agent.
    async fn pod_stream(&self, call: &Call, req: Request<Incoming>) -> ApiResult<Response<Body>> {
        let sub = call.subresource.as_deref().unwrap_or_default();
        let (pod, client, node_object) = self.pod_on_its_node(call, sub).await?;
        crate::kubelet_proxy::pod_stream(client, &pod, node_object.as_ref(), sub, req, &call.query)
            .await
    }

    async fn list(&self, call: &Call) -> ApiResult<Response<Body>> {
        let selectors = Selectors::from_query(&call.query, call.resource)?;
        let limit = call.query.number("limit")?.unwrap_or(0).max(0) as usize;
        let prefix = call.collection_prefix();
        let rv_param = call.query.get("resourceVersion");
        let rv_match = call.query.get("resourceVersionMatch");
        let (objects, revision): (Listed, Revision) =
            if let Some(token) = call.query.get("continue") {
                let token = decode_continue(token)?;
                if !token.start.starts_with(&prefix) {
                    return Err(ApiError::bad_request(
                        "continue key is not valid: it belongs to another collection",
                    ));
                }
                (
                    self.list_at(&prefix, token.rv, Some(&token.start)).await?,
                    token.rv,
                )
            } else {
                match (rv_param, rv_match) {
                    (Some(rv), Some("Exact")) => {
                        let revision = parse_rv(rv)?;
                        (self.list_at(&prefix, revision, None).await?, revision)
                    }
                    (Some("0"), _) => {
                        let snapshot = self.cache.list(&prefix, None);
                        (snapshot.objects, snapshot.revision)
                    }
                    (Some(rv), _) => {
                        self.cache.wait_for(parse_rv(rv)?).await?;
                        let snapshot = self.cache.list(&prefix, None);
                        (snapshot.objects, snapshot.revision)
                    }
                    (None, Some(_)) => {
                        return Err(ApiError::bad_request(
                            "resourceVersionMatch is forbidden unless resourceVersion is provided",
                        ));
                    }
                    (None, None) => {
                        self.cache.sync().await?;
                        let snapshot = self.cache.list(&prefix, None);
                        (snapshot.objects, snapshot.revision)
                    }
                }
            };
        let mut selected: Vec<(String, Arc<CachedObject>)> = Vec::new();
        let mut more = false;
        let mut remaining = 0usize;
        for (key, object) in objects {
            if !selectors.matches(&object) {
                continue;
            }
            if limit > 0 && selected.len() >= limit {
                more = true;
                remaining += 1;
                if !selectors.is_empty() {
                    break;
                }
                continue;
            }
            selected.push((key, object));
        }
        let continue_token = if more {
            selected
                .last()
                .map(|(key, _)| encode_continue(revision, key))
        } else {
            None
        };
        if wants_table(&call.accept) {
            let values: Vec<Value> = selected
                .iter()
                .map(|(_, o)| to_request(call.resource, &o.value()))
                .collect();
            let table = table_of(
                call,
                &values,
                &revision.to_string(),
                continue_token.as_deref(),
                true,
            );
            return Ok(json_response(200, &table));
        }
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if let Some(token) = &continue_token {
            meta["continue"] = json!(token);
            if selectors.is_empty() {
                meta["remainingItemCount"] = json!(remaining);
            }
        }
        // The list is assembled from the objects' cached JSON: nothing is encoded again.
        let mut body = Vec::with_capacity(
            selected
                .iter()
                .map(|(_, o)| o.json.len() + 1)
                .sum::<usize>()
                + 256,
        );
        body.extend_from_slice(
            format!(
                "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                call.resource.list_kind(),
                call.resource.api_version(),
                meta
            )
            .as_bytes(),
        );
        let convert = needs_conversion(call.resource);
        for (i, (_, object)) in selected.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            if convert {
                let converted = to_request(call.resource, &object.value());
                body.extend_from_slice(&serde_json::to_vec(&converted).unwrap_or_default());
            } else {
                body.extend_from_slice(&object.json);
            }
        }
        body.extend_from_slice(b"]}");
        Ok(bytes_response(200, "application/json", Bytes::from(body)))
    }

    /// Objects under `prefix` as of `revision`, after `start_after`: from the cache
    /// when it is still at that revision, else from the store's history.
    async fn list_at(
        &self,
        prefix: &str,
        revision: Revision,
        start_after: Option<&str>,
    ) -> ApiResult<Listed> {
        let snapshot = self.cache.list(prefix, start_after);
        if snapshot.revision == revision {
            return Ok(snapshot.objects);
        }
        let options = krust_store::ListOptions {
            revision,
            start_after: start_after.map(str::to_string),
            limit: 0,
        };
        let list = self.store.list(prefix, options).await.map_err(|error| match error {
            krust_store::Error::Compacted { .. } => ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results.",
            ),
            other => other.into(),
        })?;
        Ok(list
            .kvs
            .iter()
            .filter_map(|kv| {
                CachedObject::from_stored(&kv.value, kv.mod_revision).map(|o| (kv.key.clone(), o))
            })
            .collect())
    }

    /// Decodes a request body into an object of the call's kind: JSON, YAML or
    /// protobuf, apiVersion and kind checked or filled in, typed decoding, unknown
    /// fields handled per `fieldValidation`, and converted to the storage version.
    /// Returns the object and warnings.
    fn decode_object(&self, call: &Call, body: &[u8]) -> ApiResult<(Value, Vec<String>)> {
        let media = request::media_type(Some(&call.content_type));
        let object = request::decode_body(body, &media)?;
        let (object, warnings) = self.typed_from_value(call, object)?;
        Ok((to_storage(call.resource, object), warnings))
    }

    /// Typed round-trip of an object: type errors are 400, unknown fields follow
    /// the `fieldValidation` parameter (Strict: 400, Warn: warnings, Ignore).
    fn typed(
        &self,
        call: &Call,
        resource: &ResourceInfo,
        object: Value,
    ) -> ApiResult<(Value, Vec<String>)> {
        let decoded = (resource.decode)(object.clone()).map_err(|e| {
            ApiError::bad_request(format!(
                "error decoding {} {:?}: {e}",
                resource.kind,
                meta_str(&object, "name")
            ))
        })?;
        let unknown = resources::unknown_fields(&object, &decoded);
        let mut warnings = Vec::new();
        if !unknown.is_empty() {
            let messages: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            match call.query.get("fieldValidation").unwrap_or("Warn") {
                "Strict" => {
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        resource.kind,
                        resource.api_version(),
                        resource.kind,
                        messages.join(", ")
                    )));
                }
                "Ignore" => {}
                "Warn" => warnings = messages,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
                    )));
                }
            }
        }
        Ok((decoded, warnings))
    }

    fn validate(&self, resource: &ResourceInfo, object: &Value) -> ApiResult<()> {
        let mut causes =
            validation::validate_metadata(object, resource.namespaced, resource.name_rule);
        causes.extend(validation::validate_object(
            resource.group,
            resource.kind,
            object,
        ));
        if is_csr(resource) {
            causes.extend(crate::csr::validate(object));
        }
        if causes.is_empty() {
            Ok(())
        } else {
            let name = match meta_str(object, "name") {
                "" => meta_str(object, "generateName"),
                name => name,
            };
            Err(ApiError::invalid(
                resource.group,
                resource.kind,
                name,
                causes,
            ))
        }
    }

    /// Namespaced objects need an existing namespace that is not terminating.
    async fn check_namespace(&self, call: &Call, namespace: &str) -> ApiResult<()> {
        if !call.resource.namespaced {
            return Ok(());
        }
        let namespaces = resources::find("", "v1", "namespaces").unwrap();
        let key = object_key(namespaces, None, namespace);
        let Some(kv) = self.read(&key).await? else {
            return Err(ApiError::not_found("", "namespaces", namespace));
        };
        let ns = from_kv(&kv)?;
        if ns["status"]["phase"] == "Terminating" || !meta_str(&ns, "deletionTimestamp").is_empty()
        {
            return Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                qualified(call.resource.group, call.resource.plural),
                call.name()
            )));
        }
        Ok(())
    }

    async fn create(&self, call: &Call, body: &[u8]) -> ApiResult<Response<Body>> {
        if let Some(sub) = call.subresource.as_deref() {
            return match sub {
                "binding" => self.bind(call, body).await,
                "eviction" => self.evict(call, body).await,
                "token" if call.resource.plural == "serviceaccounts" => {
                    self.token_request(call, body)
                }
                _ => Err(ApiError::method_not_allowed(format!(
                    "create is not supported on {}/{sub}",
                    call.resource.plural
                ))),
            };
        }
        if call.name.is_some() {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({})",
                call.resource.plural
            )));
        }
        if call.resource.create_only {
            return crate::bootstrap::review(self, call, body).await;
        }
        let (object, warnings) = self.decode_object(call, body)?;
        let created = self.create_object(call, object, Tracking::Update).await?;
        self.respond_warned(call, 201, &created, &warnings)
    }

    /// Creates an already decoded object: metadata filled in, validated, stored.
    pub(crate) async fn create_object(
        &self,
        call: &Call,
        mut object: Value,
        tracking: Tracking,
    ) -> ApiResult<Value> {
        let resource = call.resource;
        let namespace = call.namespace.clone();
        {
            let meta = metadata_mut(&mut object);
            match (&namespace, meta.get("namespace").and_then(Value::as_str)) {
                (Some(url_ns), Some(body_ns)) if !body_ns.is_empty() && body_ns != url_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(url_ns), _) if resource.namespaced => {
                    meta.insert("namespace".into(), json!(url_ns));
                }
                _ => {
                    meta.remove("namespace");
                }
            }
            if meta
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
                && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
                && !prefix.is_empty()
            {
                let name = format!("{prefix}{}", random_suffix());
                meta.insert("name".into(), json!(name));
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now()));
            for field in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.remove(field);
            }
        }
        if object.get("spec").is_some() {
            metadata_mut(&mut object).insert("generation".into(), json!(1));
        }
        prepare_create(resource, &mut object);
        if is_csr(resource) {
            crate::csr::prepare_create(&mut object, &call.user);
        }
        normalize_input(resource, &mut object);
        defaults::apply_defaults(resource.group, resource.kind, &mut object);
        crate::storage_admission::admit_create(self.store.as_ref(), resource, &mut object).await?;
        if let Some(ns) = &namespace {
            self.admit_limit_ranges(resource, ns, &mut object)?;
            if resource.group.is_empty() && resource.plural == "pods" {
                crate::service_account::admit_pod(&self.cache, ns, &mut object)?;
            }
        }
        if tracking == Tracking::Update {
            let api_version = resource.api_version();
            apply::update_managed_fields(
                None,
                &mut object,
                &call.field_manager,
                "",
                &api_version,
                &now(),
            );
        }
        self.validate(resource, &object)?;
        crate::node_restriction::admit(
            &call.user,
            resource.group,
            resource.plural,
            None,
            None,
            Some(&object),
        )?;
        let name = meta_str(&object, "name").to_string();
        if let Some(ns) = &namespace {
            self.check_namespace(call, ns).await?;
            self.charge_quotas(resource, ns, &object, call.query.dry_run()?)
                .await?;
        }
        if call.query.dry_run()? {
            if is_service(resource) {
                self.allocate_service_dry_run(&mut object, None).await?;
            }
            return Ok(object);
        }
        let key = object_key(resource, namespace.as_deref(), &name);
        let claimed = match is_service(resource) {
            true => Some(self.allocate_service(&mut object, None).await?),
            false => None,
        };
        let created = self.store.create(&key, encode_for_store(&object)).await;
        if let (Err(_), Some(claimed)) = (&created, claimed) {
            self.release_claimed(claimed).await;
        }
        match created {
            Ok(revision) => {
                set_resource_version(&mut object, revision);
                Ok(object)
            }
            Err(krust_store::Error::AlreadyExists(_)) => Err(ApiError::already_exists(
                resource.group,
                resource.plural,
                &name,
            )),
            Err(error) => Err(error.into()),
        }
    }

    async fn update(&self, call: &Call, body: &[u8]) -> ApiResult<Response<Body>> {
        match call.subresource.as_deref() {
            None
            | Some("status")
            | Some("finalize")
            | Some("approval")
            | Some("ephemeralcontainers")
            | Some("resize") => {}
            Some("scale") => return self.update_scale(call, body, None).await,
            Some(other) => {
                return Err(ApiError::method_not_allowed(format!(
                    "update is not supported on {}/{other}",
                    call.resource.plural
                )));
            }
        }
        let (object, warnings) = self.decode_object(call, body)?;
        if meta_str(&object, "name") != call.name() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                meta_str(&object, "name"),
                call.name()
            )));
        }
        let expected = match meta_str(&object, "resourceVersion") {
            "" => None,
            rv => Some(parse_rv(rv)?),
        };
        let key = call.key();
        let mut attempts = 0;
        loop {
            let current = self.read(&key).await?.ok_or_else(|| call.not_found())?;
            if let Some(expected) = expected
                && expected != current.mod_revision
            {
                return Err(call.modified());
            }
            let old = from_kv(&current)?;
            match self
                .write_update(call, &key, &current, &old, object.clone(), Tracking::Update)
                .await
            {
                Err(UpdateError::Conflict) if expected.is_none() && attempts < CONFLICT_RETRIES => {
                    attempts += 1
                }
                Err(UpdateError::Conflict) => {
                    return Err(call.modified());
                }
                Err(UpdateError::Api(error)) => return Err(error),
                Ok(updated) => return self.respond_warned(call, 200, &updated, &warnings),
            }
        }
    }

    /// Merges an update into the old object as the (sub)resource allows, validates
    /// and writes it if anything changed. Deletes the object when its last finalizer
    /// goes while it is being deleted.
    async fn write_update(
        &self,
        call: &Call,
        key: &str,
        current: &KeyValue,
        old: &Value,
        new: Value,
        tracking: Tracking,
    ) -> Result<Value, UpdateError> {
        let resource = call.resource;
        let mut merged = merge_update(resource, call.subresource.as_deref(), old, new);
        if is_service(resource) {
            crate::service_alloc::drop_type_dependent_fields(&mut merged, old);
        }
        normalize_input(resource, &mut merged);
        defaults::apply_defaults(resource.group, resource.kind, &mut merged);
        if tracking == Tracking::Update {
            let subresource = call.subresource.as_deref().unwrap_or("");
            let api_version = resource.api_version();
            let mut previous = old.clone();
            metadata_mut(&mut previous).remove("resourceVersion");
            apply::update_managed_fields(
                Some(&previous),
                &mut merged,
                &call.field_manager,
                subresource,
                &api_version,
                &now(),
            );
        }
        if let Some(generation) = metadata(old).get("generation").and_then(Value::as_i64)
            && spec_changed(old, &merged)
        {
            metadata_mut(&mut merged).insert("generation".into(), json!(generation + 1));
        }
        self.validate(resource, &merged)?;
        crate::node_restriction::admit(
            &call.user,
            resource.group,
            resource.plural,
            call.subresource.as_deref(),
            Some(old),
            Some(&merged),
        )?;
        if is_csr(resource) && crate::csr::approval_changed(old, &merged) {
            crate::csr::admit_approval(&self.cache, &call.user, &merged)?;
        }
        crate::storage_admission::admit_update(
            self.store.as_ref(),
            resource,
            call.subresource.as_deref(),
            old,
            &merged,
        )
        .await?;
        let mut unchanged = merged.clone();
        set_resource_version(&mut unchanged, current.mod_revision);
        if unchanged == *old {
            return Ok(unchanged);
        }
        if call.query.dry_run()? {
            if is_service(resource) {
                self.allocate_service_dry_run(&mut unchanged, Some(old))
                    .await?;
            }
            return Ok(unchanged);
        }
        let deleting = !meta_str(&merged, "deletionTimestamp").is_empty();
        if deleting && finalizers(&merged).is_empty() && !has_spec_finalizers(&merged) {
            return match self.store.delete(key, Some(current.mod_revision)).await {
                Ok((revision, _)) => {
                    if is_service(resource) {
                        self.release_service(old, None).await;
                    }
                    set_resource_version(&mut merged, revision);
                    Ok(merged)
                }
                Err(krust_store::Error::Conflict { .. }) => Err(UpdateError::Conflict),
                Err(error) => Err(UpdateError::Api(error.into())),
            };
        }
        let claimed = match is_service(resource) {
            true => Some(self.allocate_service(&mut merged, Some(old)).await?),
            false => None,
        };
        let updated = self
            .store
            .update(key, encode_for_store(&merged), current.mod_revision)
            .await;
        if let Some(claimed) = claimed {
            match &updated {
                Ok(_) => self.release_service(old, Some(&merged)).await,
                Err(_) => self.release_claimed(claimed).await,
            }
        }
        match updated {
            Ok(revision) => {
                set_resource_version(&mut merged, revision);
                Ok(merged)
            }
            Err(krust_store::Error::Conflict { .. }) => Err(UpdateError::Conflict),
            Err(krust_store::Error::NotFound(_)) => Err(UpdateError::Api(call.not_found())),
            Err(error) => Err(UpdateError::Api(error.into())),
        }
    }

    async fn patch(&self, call: &Call, body: &[u8]) -> ApiResult<Response<Body>> {
        let media = request::media_type(Some(&call.content_type));
        let patch_document = request::decode_body(body, &media)?;
        if call.subresource.as_deref() == Some("scale") {
            return self
                .update_scale(call, body, Some((&media, &patch_document)))
                .await;
        }
        if media == APPLY_PATCH {
            return self.server_side_apply(call, patch_document).await;
        }
        let key = call.key();
        let mut attempts = 0;
        loop {
            let current = self.read(&key).await?.ok_or_else(|| call.not_found())?;
            let old = from_kv(&current)?;
            let patched = apply_patch(
                call.resource,
                &media,
                &to_request(call.resource, &old),
                &patch_document,
            )?;
            let (patched, warnings) = self.typed_from_value(call, patched)?;
            let patched = to_storage(call.resource, patched);
            // Only a resourceVersion the patch itself sets is a precondition; the one
            // carried over from the stored object is not (a conflict is retried).
            let expected = match patch_resource_version(&patch_document) {
                Some(_) => match meta_str(&patched, "resourceVersion") {
                    "" => None,
                    rv => Some(parse_rv(rv)?),
                },
                None => None,
            };
            if let Some(expected) = expected
                && expected != current.mod_revision
            {
                return Err(call.modified());
            }
            match self
                .write_update(call, &key, &current, &old, patched, Tracking::Update)
                .await
            {
                Err(UpdateError::Conflict) if attempts < CONFLICT_RETRIES && expected.is_none() => {
                    attempts += 1
                }
                Err(UpdateError::Conflict) => {
                    return Err(call.modified());
                }
                Err(UpdateError::Api(error)) => return Err(error),
                Ok(updated) => return self.respond_warned(call, 200, &updated, &warnings),
            }
        }
    }

    /// A PATCH with `application/apply-patch+yaml`: server-side apply of the
    /// configuration, creating the object if it does not exist.
    async fn server_side_apply(&self, call: &Call, mut config: Value) -> ApiResult<Response<Body>> {
        if call.query.get("fieldManager").is_none() {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                vec![Cause::new(
                    "FieldValueRequired",
                    "fieldManager",
                    "Required value: is required for apply patch",
                )],
            ));
        }
        check_type(
            &mut config,
            &call.resource.api_version(),
            call.resource.kind,
        )?;
        if meta_str(&config, "name") != call.name() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                meta_str(&config, "name"),
                call.name()
            )));
        }
        // The typed round-trip only checks the configuration: applying it must not
        // add the empty required fields the typed form would carry.
        let (_, warnings) = self.typed(call, call.resource, config.clone())?;
        let force = call.query.flag("force");
        let resource = call.resource;
        let api_version = resource.api_version();
        let key = call.key();
        for _ in 0..CONFLICT_RETRIES {
            let current = self.read(&key).await?;
            let live = current.as_ref().map(from_kv).transpose()?;
            let live_in_request_version = live.as_ref().map(|l| to_request(resource, l));
            let applied = apply::server_side_apply(
                live_in_request_version.as_ref(),
                &config,
                &call.field_manager,
                force,
                resource.group,
                resource.kind,
                &api_version,
                &now(),
            )
            .map_err(|conflicts| {
                ApiError::apply_conflicts(conflicts.message(), conflicts.causes())
            })?;
            let applied = to_storage(resource, applied);
            let (code, result) = match (&current, &live) {
                (Some(current), Some(old)) => {
                    match self
                        .write_update(call, &key, current, old, applied, Tracking::Applied)
                        .await
                    {
                        Ok(updated) => (200, updated),
                        Err(UpdateError::Conflict) => continue,
                        Err(UpdateError::Api(error)) => return Err(error),
                    }
                }
                _ => match self.create_object(call, applied, Tracking::Applied).await {
                    Ok(created) => (201, created),
                    Err(error) if error.code == 409 => continue,
                    Err(error) => return Err(error),
                },
            };
            return self.respond_warned(call, code, &result, &warnings);
        }
        Err(call.modified())
    }

    fn typed_from_value(&self, call: &Call, mut object: Value) -> ApiResult<(Value, Vec<String>)> {
        check_type(
            &mut object,
            &call.resource.api_version(),
            call.resource.kind,
        )?;
        self.typed(call, call.resource, object)
    }

    /// GET, PUT and PATCH of the scale subresource.
    async fn update_scale(
        &self,
        call: &Call,
        body: &[u8],
        patch: Option<(&str, &Value)>,
    ) -> ApiResult<Response<Body>> {
        if !call.resource.subresources.contains(&"scale") {
            return Err(ApiError::path_not_found());
        }
        let key = call.key();
        let mut attempts = 0;
        loop {
            let current = self.read(&key).await?.ok_or_else(|| call.not_found())?;
            let old = from_kv(&current)?;
            let old_scale = scale_of(call.resource, &old)?;
            let (new_scale, expected) = match patch {
                Some((media, document)) => {
                    let scale_resource =
                        resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
                    let patched = apply_patch(scale_resource, media, &old_scale, document)?;
                    // Only a resourceVersion the patch itself names is a precondition;
                    // the one carried over from the current Scale is not.
                    (
                        patched,
                        patch_resource_version(document).map(str::to_string),
                    )
                }
                None => {
                    let body =
                        request::decode_body(body, &request::media_type(Some(&call.content_type)))?;
                    let expected = Some(meta_str(&body, "resourceVersion").to_string());
                    (body, expected)
                }
            };
            let expected = expected.filter(|rv| !rv.is_empty());
            let replicas = new_scale["spec"]["replicas"].as_i64().unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    call.name(),
                    vec![Cause::new(
                        "FieldValueInvalid",
                        "spec.replicas",
                        format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                    )],
                ));
            }
            if let Some(rv) = &expected
                && parse_rv(rv)? != current.mod_revision
            {
                return Err(call.modified());
            }
            let mut updated = old.clone();
            updated["spec"]["replicas"] = json!(replicas);
            // Written like a main-resource update, recorded in managedFields as `scale`.
            match self
                .write_update(call, &key, &current, &old, updated, Tracking::Update)
                .await
            {
                Ok(object) => return Ok(json_response(200, &scale_of(call.resource, &object)?)),
                Err(UpdateError::Conflict) if expected.is_none() && attempts < CONFLICT_RETRIES => {
                    attempts += 1;
                }
                Err(UpdateError::Conflict) => return Err(call.modified()),
                Err(UpdateError::Api(error)) => return Err(error),
            }
        }
    }

    /// `pods/<name>/binding` and `bindings`: assigns a pod to a node.
    /// `serviceaccounts/<name>/token`: a signed token for the ServiceAccount.
    fn token_request(&self, call: &Call, body: &[u8]) -> ApiResult<Response<Body>> {
        let Some(signer) = &self.tokens.service_accounts else {
            return Err(ApiError::new_service_unavailable(
                "this server has no service account signing key (--service-account-key-file)",
            ));
        };
        let request = request::decode_body(body, &request::media_type(Some(&call.content_type)))?;
        let answer = crate::service_account::token_request(
            signer,
            &self.cache,
            call.namespace.as_deref().unwrap_or("default"),
            call.name(),
            &request,
        )?;
        Ok(json_response(201, &answer))
    }

    pub(crate) async fn bind(&self, call: &Call, body: &[u8]) -> ApiResult<Response<Body>> {
        let binding = request::decode_body(body, &request::media_type(Some(&call.content_type)))?;
        let pod_name = if call.name().is_empty() {
            meta_str(&binding, "name").to_string()
        } else {
            call.name().to_string()
        };
        let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                &pod_name,
                vec![Cause::new(
                    "FieldValueRequired",
                    "target.name",
                    "Required value",
                )],
            ));
        }
        let pods = resources::find("", "v1", "pods").unwrap();
        let key = object_key(pods, call.namespace.as_deref(), &pod_name);
        for _ in 0..CONFLICT_RETRIES {
            let current = self
                .read(&key)
                .await?
                .ok_or_else(|| ApiError::not_found("", "pods", &pod_name))?;
            let mut pod = from_kv(&current)?;
            if let Some(existing) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &pod_name,
                    &format!("pod {pod_name} is already assigned to node \"{existing}\""),
                ));
            }
            if !meta_str(&pod, "deletionTimestamp").is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &pod_name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            set_condition(&mut pod, "PodScheduled", "True", "", "");
            if call.query.dry_run()? {
                break;
            }
            match self
                .store
                .update(&key, encode_for_store(&pod), current.mod_revision)
                .await
            {
                Ok(_) => break,
                Err(krust_store::Error::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(json_response(
            201,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    /// ResourceQuota admission of a new object in namespace `ns`
    /// ([`krust_api::quota`]): every quota whose scope takes it in and that
    /// constrains what it uses is charged (its `status.used` written) before the
    /// object is; one that would go over `hard` refuses it with 403.
    async fn charge_quotas(
        &self,
        resource: &ResourceInfo,
        ns: &str,
        object: &Value,
        dry_run: bool,
    ) -> ApiResult<()> {
        use krust_api::quota;
        let Some(quotas) = resources::find("", "v1", "resourcequotas") else {
            return Ok(());
        };
        let prefix = format!("{}{ns}/", quotas.key_prefix());
        if self.cache.list(&prefix, None).objects.is_empty() {
            return Ok(());
        }
        let (group, plural) = (resource.group, resource.plural);
        let delta = quota::usage(group, plural, object);
        let forbidden = |why: String| {
            ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: {why}",
                qualified(group, plural),
                meta_str(object, "name")
            ))
        };
        // Quotas already charged by an earlier attempt (one that conflicted on a
        // later quota) are not charged twice.
        let mut charged_keys: std::collections::HashSet<String> = Default::default();
        for _ in 0..CONFLICT_RETRIES {
            let stored = self
                .store
                .list(&prefix, krust_store::ListOptions::default())
                .await?
                .kvs;
            let mut charges = Vec::new();
            for kv in stored.iter().filter(|kv| !charged_keys.contains(&kv.key)) {
                let mut current = from_kv(kv)?;
                if !quota::in_scope(&current, group, plural, object) {
                    continue;
                }
                let name = meta_str(&current, "name").to_string();
                if group.is_empty() && plural == "pods" {
                    let missing = quota::missing_pod_resources(&current, object);
                    if !missing.is_empty() {
                        return Err(forbidden(format!(
                            "failed quota: {name}: must specify {}",
                            missing.join(",")
                        )));
                    }
                }
                let hard = current["spec"]["hard"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let unknown: Vec<&String> = delta
                    .keys()
                    .filter(|r| {
                        hard.contains_key(*r) && current["status"]["used"].get(r.as_str()).is_none()
                    })
                    .collect();
                if !unknown.is_empty() {
                    let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
                    return Err(forbidden(format!(
                        "status unknown for quota: {name}, resources: {}",
                        names.join(",")
                    )));
                }
                if let Some(used) = quota::charge(&current, &delta).map_err(&forbidden)? {
                    current["status"]["used"] = Value::Object(used);
                    metadata_mut(&mut current).remove("resourceVersion");
                    charges.push((kv, current));
                }
            }
            if dry_run {
                return Ok(());
            }
            let mut conflicted = false;
            for (kv, charged) in charges {
                match self
                    .store
                    .update(&kv.key, encode_for_store(&charged), kv.mod_revision)
                    .await
                {
                    Ok(_) => {
                        charged_keys.insert(kv.key.clone());
                    }
                    Err(krust_store::Error::Conflict { .. }) => {
                        conflicted = true;
                        break;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            if !conflicted {
                return Ok(());
            }
        }
        Err(ApiError::conflict(
            "",
            "resourcequotas",
            ns,
            "the namespace's quotas changed too often; try again",
        ))
    }

    /// LimitRanger admission of a new pod or claim in namespace `ns`
    /// ([`crate::limit_ranger`]): defaults filled in, bounds enforced (403).
    fn admit_limit_ranges(
        &self,
        resource: &ResourceInfo,
        ns: &str,
        object: &mut Value,
    ) -> ApiResult<()> {
        if !resource.group.is_empty() || !matches!(resource.kind, "Pod" | "PersistentVolumeClaim") {
            return Ok(());
        }
        let Some(ranges) = resources::find("", "v1", "limitranges") else {
            return Ok(());
        };
        let snapshot = self
            .cache
            .list(&format!("{}{ns}/", ranges.key_prefix()), None);
        if snapshot.objects.is_empty() {
            return Ok(());
        }
        let ranges: Vec<Value> = snapshot
            .objects
            .iter()
            .filter_map(|(_, cached)| serde_json::from_slice(&cached.json).ok())
            .collect();
        crate::limit_ranger::admit(resource.kind, object, &ranges).map_err(|broken| {
            let reasons = match broken.as_slice() {
                [one] => one.clone(),
                many => format!("[{}]", many.join(", ")),
            };
            ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: {reasons}",
                qualified(resource.group, resource.plural),
                meta_str(object, "name")
            ))
        })
    }

    /// `pods/<name>/eviction`: deletes the pod gracefully unless that would break
    /// its PodDisruptionBudget ([`crate::eviction`]); the body is a policy/v1
    /// Eviction whose `deleteOptions` apply to the deletion.
    async fn evict(&self, call: &Call, body: &[u8]) -> ApiResult<Response<Body>> {
        let mut options = DeleteOptions::default();
        if !body.iter().all(u8::is_ascii_whitespace) {
            let eviction =
                request::decode_body(body, &request::media_type(Some(&call.content_type)))?;
            if let Some(name) = eviction["metadata"]["name"].as_str()
                && name != call.name()
            {
                return Err(ApiError::bad_request(
                    "name in URL does not match name in Eviction object",
                ));
            }
            if eviction["deleteOptions"].is_object() {
                let bytes = serde_json::to_vec(&eviction["deleteOptions"]).unwrap_or_default();
                options = DeleteOptions::parse(&call.query, &bytes, "application/json")?;
            }
        }
        let dry_run = options.dry_run || call.query.dry_run()?;
        let key = call.key();
        let budgets_resource = resources::find("policy", "v1", "poddisruptionbudgets")
            .ok_or_else(|| ApiError::internal("poddisruptionbudgets are not served"))?;
        let budgets_prefix = format!(
            "{}{}/",
            budgets_resource.key_prefix(),
            call.namespace.as_deref().unwrap_or("")
        );
        for _ in 0..CONFLICT_RETRIES {
            let current = self.read(&key).await?.ok_or_else(|| call.not_found())?;
            let pod = from_kv(&current)?;
            let budgets = self
                .store
                .list(&budgets_prefix, krust_store::ListOptions::default())
                .await?
                .kvs;
            let values = budgets.iter().map(from_kv).collect::<ApiResult<Vec<_>>>()?;
            let verdict = crate::eviction::decide(&pod, &values, Utc::now())?;
            if let crate::eviction::Verdict::SpendDisruption { budget, updated } = verdict
                && !dry_run
            {
                let stored = &budgets[budget];
                match self
                    .store
                    .update(&stored.key, encode_for_store(&updated), stored.mod_revision)
                    .await
                {
                    Ok(_) => {}
                    Err(krust_store::Error::Conflict { .. }) => continue,
                    Err(error) => return Err(error.into()),
                }
            }
            let current = match dry_run {
                true => current,
                false => self.mark_disruption_target(&key, current).await?,
            };
            self.delete_object(call, &key, current, &options).await?;
            return Ok(json_response(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ));
        }
        Err(ApiError::too_many_requests(
            "the pod's disruption budget changed too often; try the eviction again",
        ))
    }

    /// Adds the DisruptionTarget condition to a running pod that is about to be
    /// evicted, retrying on conflict; returns the pod as stored afterwards.
    async fn mark_disruption_target(
        &self,
        key: &str,
        mut current: KeyValue,
    ) -> ApiResult<KeyValue> {
        for _ in 0..CONFLICT_RETRIES {
            let mut pod = from_kv(&current)?;
            let phase = pod["status"]["phase"].as_str().unwrap_or("");
            if matches!(phase, "Succeeded" | "Failed") {
                return Ok(current);
            }
            let mut conditions: Vec<Value> = pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["type"] != "DisruptionTarget")
                .cloned()
                .collect();
            conditions.push(crate::eviction::disruption_condition(Utc::now()));
            pod["status"]["conditions"] = Value::Array(conditions);
            metadata_mut(&mut pod).remove("resourceVersion");
            let value = encode_for_store(&pod);
            match self
                .store
                .update(key, value.clone(), current.mod_revision)
                .await
            {
                Ok(revision) => {
                    current.value = value;
                    current.mod_revision = revision;
                    return Ok(current);
                }
                Err(krust_store::Error::Conflict { .. }) => {
                    current = self
                        .read(key)
                        .await?
                        .ok_or_else(|| ApiError::not_found("", "pods", meta_str(&pod, "name")))?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(current)
    }

    async fn delete(&self, call: &Call, body: &[u8]) -> ApiResult<Response<Body>> {
        if call.subresource.is_some() {
            return Err(ApiError::method_not_allowed(
                "delete is not supported on subresources",
            ));
        }
        let options = DeleteOptions::parse(&call.query, body, &call.content_type)?;
        let key = call.key();
        let current = self.read(&key).await?.ok_or_else(|| call.not_found())?;
        crate::node_restriction::admit(
            &call.user,
            call.resource.group,
            call.resource.plural,
            None,
            Some(&from_kv(&current)?),
            None,
        )?;
        let (code, object) = self.delete_object(call, &key, current, &options).await?;
        if code == 200 {
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": call.name(), "group": call.resource.group, "kind": call.resource.plural, "uid": meta_str(&object, "uid")},
            });
            return Ok(json_response(200, &status));
        }
        self.respond(call, code, &object)
    }

    /// Deletes one object under `options`: at once, or by marking it with a
    /// deletionTimestamp when finalizers or a grace period must run first.
    /// Returns 200 when the object is gone and 202 when its deletion is pending.
    async fn delete_object(
        &self,
        call: &Call,
        key: &str,
        mut current: KeyValue,
        options: &DeleteOptions,
    ) -> ApiResult<(u16, Value)> {
        let dry_run = options.dry_run || call.query.dry_run()?;
        for _ in 0..CONFLICT_RETRIES {
            let mut object = from_kv(&current)?;
            if let Some(uid) = &options.uid
                && uid != meta_str(&object, "uid")
            {
                return Err(ApiError::conflict(
                    call.resource.group,
                    call.resource.plural,
                    call.name(),
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&object, "uid")
                    ),
                ));
            }
            if let Some(rv) = &options.resource_version
                && rv != meta_str(&object, "resourceVersion")
            {
                return Err(ApiError::conflict(
                    call.resource.group,
                    call.resource.plural,
                    call.name(),
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta_str(&object, "resourceVersion")
                    ),
                ));
            }
            let mut finalizers = finalizers(&object);
            match options.propagation.as_deref() {
                Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                    finalizers.push("orphan".into())
                }
                Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                    finalizers.push("foregroundDeletion".into())
                }
                _ => {}
            }
            let grace = graceful_period(call.resource, &object, options.grace_period);
            let already_deleting = !meta_str(&object, "deletionTimestamp").is_empty();
            if finalizers.is_empty() && grace == 0 && !has_spec_finalizers(&object) {
                if dry_run {
                    return Ok((200, object));
                }
                match self.store.delete(key, Some(current.mod_revision)).await {
                    Ok(_) => {
                        if is_service(call.resource) {
                            self.release_service(&object, None).await;
                        }
                        return Ok((200, object));
                    }
                    Err(krust_store::Error::Conflict {
                        current: Some(latest),
                        ..
                    }) => {
                        current = *latest;
                        continue;
                    }
                    Err(krust_store::Error::Conflict { current: None, .. })
                    | Err(krust_store::Error::NotFound(_)) => {
                        return Err(call.not_found());
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            if already_deleting && finalizers == self::finalizers(&object) {
                return Ok((202, object));
            }
            let meta = metadata_mut(&mut object);
            if !already_deleting {
                let at = Utc::now() + chrono::Duration::seconds(grace);
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                );
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            meta.insert("finalizers".into(), json!(finalizers));
            if call.resource.plural == "namespaces" {
                object["status"]["phase"] = json!("Terminating");
            }
            if dry_run {
                return Ok((202, object));
            }
            match self
                .store
                .update(key, encode_for_store(&object), current.mod_revision)
                .await
            {
                Ok(revision) => {
                    set_resource_version(&mut object, revision);
                    return Ok((202, object));
                }
                Err(krust_store::Error::Conflict {
                    current: Some(latest),
                    ..
                }) => current = *latest,
                Err(krust_store::Error::Conflict { current: None, .. })
                | Err(krust_store::Error::NotFound(_)) => {
                    return Err(call.not_found());
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(call.modified())
    }

    async fn delete_collection(&self, call: &Call, body: &[u8]) -> ApiResult<Response<Body>> {
        let options = DeleteOptions::parse(&call.query, body, &call.content_type)?;
        let selectors = Selectors::from_query(&call.query, call.resource)?;
        self.cache.sync().await?;
        let snapshot = self.cache.list(&call.collection_prefix(), None);
        let mut deleted = Vec::new();
        for (key, object) in snapshot.objects {
            if !selectors.matches(&object) {
                continue;
            }
            let Some(current) = self.read(&key).await? else {
                continue;
            };
            let item_call = Call {
                name: Some(object.name.clone()),
                namespace: Some(object.namespace.clone()).filter(|ns| !ns.is_empty()),
                ..call.clone_shallow()
            };
            match self
                .delete_object(&item_call, &key, current, &options)
                .await
            {
                Ok((_, object)) => deleted.push(object),
                Err(error) if error.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let list = json!({
            "kind": call.resource.list_kind(), "apiVersion": call.resource.api_version(),
            "metadata": {"resourceVersion": self.cache.revision().to_string()}, "items": deleted,
        });
        Ok(json_response(200, &list))
    }
}

impl Call {
    /// A copy of the call's routing facts (for internal sub-calls).
    pub fn clone_shallow(&self) -> Call {
        Call {
            resource: self.resource,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            subresource: self.subresource.clone(),
            query: self.query.clone(),
            accept: self.accept.clone(),
            content_type: self.content_type.clone(),
            user: self.user.clone(),
            field_manager: self.field_manager.clone(),
        }
    }
}

/// Whether a write records its changed fields in managedFields as an Update by the
/// call's field manager, or the fields were already computed by server-side apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tracking {
    Update,
    Applied,
}

/// The media type of server-side apply.
const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Why a write of an update did not happen.
enum UpdateError {
    /// The object changed since it was read: read again and retry.
    Conflict,
    Api(ApiError),
}

impl From<ApiError> for UpdateError {
    fn from(error: ApiError) -> Self {
        UpdateError::Api(error)
    }
}

/// DeleteOptions from the body and the query.
#[derive(Default, Debug)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    fn parse(query: &Query, body: &[u8], content_type: &str) -> ApiResult<DeleteOptions> {
        let mut options = DeleteOptions {
            grace_period: query.number("gracePeriodSeconds")?,
            propagation: query.get("propagationPolicy").map(str::to_string),
            ..Default::default()
        };
        if !body.iter().all(u8::is_ascii_whitespace) {
            let value = request::decode_body(body, &request::media_type(Some(content_type)))?;
            if let Some(grace) = value.get("gracePeriodSeconds").and_then(Value::as_i64) {
                options.grace_period = Some(grace);
            }
            if let Some(policy) = value.get("propagationPolicy").and_then(Value::as_str) {
                options.propagation = Some(policy.to_string());
            }
            if value.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
                options.propagation = Some("Orphan".into());
            }
            options.uid = value["preconditions"]["uid"].as_str().map(str::to_string);
            options.resource_version = value["preconditions"]["resourceVersion"]
                .as_str()
                .map(str::to_string);
            options.dry_run = value["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|v| v == "All"));
        }
        if let Some(policy) = &options.propagation
            && !matches!(policy.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![Cause::new(
                    "FieldValueNotSupported",
                    "propagationPolicy",
                    format!(
                        "Unsupported value: \"{policy}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                )],
            ));
        }
        Ok(options)
    }
}

/// Namespaces also wait for `spec.finalizers` (emptied by the namespace
/// controller once everything in the namespace is gone).
fn has_spec_finalizers(object: &Value) -> bool {
    object["kind"] == "Namespace"
        && object["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
}

/// The grace period a deletion waits: pods bound to a node that are still running
/// get their terminationGracePeriodSeconds (or the requested period); everything
/// else is deleted at once.
fn graceful_period(resource: &ResourceInfo, object: &Value, requested: Option<i64>) -> i64 {
    if resource.plural != "pods" || !resource.group.is_empty() {
        return 0;
    }
    let bound = object["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        object["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    requested
        .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}

/// Fills in apiVersion and kind when absent; refuses them when they are not the
/// expected ones.
fn check_type(object: &mut Value, api_version: &str, kind: &str) -> ApiResult<()> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON or YAML object",
        ));
    };
    for (field, expected, name) in [
        ("apiVersion", api_version, "API version"),
        ("kind", kind, "kind"),
    ] {
        match map.get(field).and_then(Value::as_str) {
            None | Some("") => {
                map.insert(field.into(), json!(expected));
            }
            Some(found) if found != expected => {
                return Err(ApiError::bad_request(format!(
                    "the {name} in the data ({found}) does not match the expected {name} ({expected})"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_rv(text: &str) -> ApiResult<Revision> {
    text.parse::<Revision>()
        .ok()
        .filter(|rv| *rv >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {text:?}")))
}

/// Upstream's name suffix alphabet (no vowels, no look-alikes), five characters.
pub(crate) fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// What a new object starts with: no status for kinds with a status subresource,
/// except the initial states upstream gives pods and namespaces.
/// The resourceVersion a patch document sets, if any: `metadata.resourceVersion` of a
/// merge or strategic merge patch, or the value of a JSON patch operation on it.
fn patch_resource_version(patch: &Value) -> Option<&str> {
    match patch {
        Value::Object(_) => patch.pointer("/metadata/resourceVersion")?.as_str(),
        Value::Array(operations) => operations
            .iter()
            .filter(|op| op["path"] == "/metadata/resourceVersion")
            .find_map(|op| op["value"].as_str()),
        _ => None,
    }
}

/// Whether objects of `resource` are Services (which hold allocated values).
fn is_service(resource: &ResourceInfo) -> bool {
    resource.group.is_empty() && resource.plural == "services"
}

/// `pods/<name>/exec`, `attach` or `portforward`: a stream into the pod.
fn is_pod_stream(call: &Call) -> bool {
    call.resource.group.is_empty()
        && call.resource.plural == "pods"
        && call.name.is_some()
        && matches!(
            call.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        )
}

/// The name a field selector `metadata.name=<name>` (or `==`) picks; empty otherwise.
fn single_name_selector(selector: &str) -> String {
    let selector = selector.trim();
    if selector.contains(',') {
        return String::new();
    }
    selector
        .strip_prefix("metadata.name")
        .map(|rest| rest.trim_start_matches("==").trim_start_matches('='))
        .filter(|_| !selector.starts_with("metadata.name!"))
        .unwrap_or("")
        .to_string()
}

fn is_csr(resource: &ResourceInfo) -> bool {
    resource.group == "certificates.k8s.io" && resource.plural == "certificatesigningrequests"
}

fn prepare_create(resource: &ResourceInfo, object: &mut Value) {
    if resource.has_status()
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    match (resource.group, resource.plural) {
        ("", "pods") => object["status"] = json!({"phase": "Pending"}),
        ("", "namespaces") => {
            object["status"] = json!({"phase": "Active"});
            if object["spec"]["finalizers"].is_null() {
                object["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        }
        _ => {}
    }
}

/// Conversions upstream makes while decoding a request: a Secret's `stringData`
/// is folded into `data` (base64) and never stored.
fn normalize_input(resource: &ResourceInfo, object: &mut Value) {
    if resource.group.is_empty()
        && resource.kind == "Secret"
        && let Some(string_data) = object.as_object_mut().and_then(|o| o.remove("stringData"))
        && let Some(entries) = string_data.as_object()
    {
        if !object["data"].is_object() {
            object["data"] = json!({});
        }
        for (key, value) in entries {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(value.as_str().unwrap_or(""));
            object["data"][key] = json!(encoded);
        }
    }
}

/// The object an update produces from the old one and the new request body.
fn merge_update(
    resource: &ResourceInfo,
    subresource: Option<&str>,
    old: &Value,
    mut new: Value,
) -> Value {
    // Fields the client may not change.
    let old_meta = metadata(old).clone();
    {
        let meta = metadata_mut(&mut new);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "generation",
        ] {
            match old_meta.get(field) {
                Some(value) => meta.insert(field.into(), value.clone()),
                None => meta.remove(field),
            };
        }
        meta.remove("resourceVersion");
    }
    if is_csr(resource) {
        let mut old = old.clone();
        metadata_mut(&mut old).remove("resourceVersion");
        return crate::csr::merge_update(subresource, &old, &new);
    }
    match subresource {
        Some("status") => {
            let mut merged = old.clone();
            metadata_mut(&mut merged).remove("resourceVersion");
            match new.get("status") {
                Some(status) => merged["status"] = status.clone(),
                None => {
                    merged.as_object_mut().map(|m| m.remove("status"));
                }
            }
            merged
        }
        Some("finalize") => {
            let mut merged = old.clone();
            metadata_mut(&mut merged).remove("resourceVersion");
            merged["spec"]["finalizers"] = new["spec"]["finalizers"].clone();
            merged
        }
        _ => {
            if resource.has_status() {
                match old.get("status") {
                    Some(status) => new["status"] = status.clone(),
                    None => {
                        new.as_object_mut().map(|m| m.remove("status"));
                    }
                }
            }
            new
        }
    }
}

/// Whether anything but metadata and status differs.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

/// Applies a patch document of the given media type.
fn apply_patch(
    resource: &ResourceInfo,
    media: &str,
    old: &Value,
    document: &Value,
) -> ApiResult<Value> {
    let result = match media {
        "application/json-patch+json" => patch::apply_json_patch(old, document),
        "application/merge-patch+json" => patch::apply_merge_patch(old, document),
        "application/strategic-merge-patch+json" => {
            patch::apply_strategic_merge_patch(old, document, resource.group, resource.kind)
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    result.map_err(|error| match error {
        PatchError::BadRequest(message) => ApiError::bad_request(message),
        PatchError::Unprocessable(message) => ApiError::unprocessable(message),
    })
}

/// The autoscaling/v1 Scale of a scalable object.
fn scale_of(resource: &ResourceInfo, object: &Value) -> ApiResult<Value> {
    if !resource.subresources.contains(&"scale") {
        return Err(ApiError::path_not_found());
    }
    let meta = metadata(object);
    let selector = match resource.plural {
        "replicationcontrollers" => object["spec"]["selector"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        _ => label_selector_string(&object["spec"]["selector"]),
    };
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    }))
}

/// A metav1.LabelSelector in its query-string form.
fn label_selector_string(selector: &Value) -> String {
    let mut terms: Vec<String> = selector["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for expression in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = expression["key"].as_str().unwrap_or("");
        let values: Vec<&str> = expression["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match expression["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    terms.join(",")
}

/// Sets a status condition of the given type.
fn set_condition(object: &mut Value, kind: &str, status: &str, reason: &str, message: &str) {
    if !object["status"].is_object() {
        object["status"] = json!({});
    }
    let conditions = object["status"]
        .as_object_mut()
        .unwrap()
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().unwrap();
    let mut condition =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now()});
    if !reason.is_empty() {
        condition["reason"] = json!(reason);
    }
    if !message.is_empty() {
        condition["message"] = json!(message);
    }
    match list.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) => *existing = condition,
        None => list.push(condition),
    }
}

/// Whether the client asked for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn add_warnings(response: &mut Response<Body>, warnings: &[String]) {
    for warning in warnings {
        if let Ok(value) =
            http::HeaderValue::from_str(&format!("299 - \"{}\"", warning.replace('"', "\\\"")))
        {
            response.headers_mut().append(header::WARNING, value);
        }
    }
}

/// The 403 message upstream gives.
fn forbidden(user: &User, a: &Attributes) -> ApiError {
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let subject = if a.name.is_empty() {
        qualified(&a.group, &a.resource)
    } else {
        format!("{} \"{}\"", qualified(&a.group, &a.resource), a.name)
    };
    ApiError::forbidden(format!(
        "{subject} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.group
    ))
}
