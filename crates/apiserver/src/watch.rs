//! WATCH: a stream of `{"type": ..., "object": ...}` lines from the watch cache,
//! with upstream's start semantics (current state first, or from a resourceVersion,
//! or 410 Gone when that is too old), selectors applied to both the old and the new
//! state of an object, bookmarks, `sendInitialEvents` and `timeoutSeconds`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::cache::{CacheEvent, CachedObject, EventType};
use crate::errors::ApiError;
use crate::handlers::{Api, Call, Selectors, needs_conversion, table_of, to_request, wants_table};
use crate::server::{Body, error_response};
use krust_api::resources::ResourceInfo;

/// How often a watch with `allowWatchBookmarks` gets a bookmark.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// Serves one watch request.
pub async fn serve_watch(api: &Api, call: &Call) -> Response<Body> {
    match start(api, call).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

/// What a watcher has to send before live events.
enum Start {
    /// The current state as ADDED events, then live events.
    State(
        Vec<Arc<CachedObject>>,
        broadcast::Receiver<Arc<CacheEvent>>,
        i64,
    ),
    /// Missed events, then live events.
    From(
        Vec<Arc<CacheEvent>>,
        broadcast::Receiver<Arc<CacheEvent>>,
        i64,
    ),
    /// The requested revision is too old.
    Gone(ApiError),
}

struct Watcher {
    selectors: Selectors,
    prefix: String,
    table: Option<(Call, bool)>,
    resource: &'static ResourceInfo,
    kind: &'static str,
    api_version: String,
    sender: mpsc::Sender<Bytes>,
    bookmarks: bool,
}

async fn start(api: &Api, call: &Call) -> Result<Response<Body>, ApiError> {
    let selectors = Selectors::from_query(&call.query, call.resource)?;
    let prefix = match (&call.namespace, call.resource.namespaced) {
        (Some(ns), true) => format!("{}{ns}/", call.resource.key_prefix()),
        _ => call.resource.key_prefix(),
    };
    let send_initial = call.query.flag("sendInitialEvents");
    let bookmarks = call.query.flag("allowWatchBookmarks");
    if send_initial && !bookmarks {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![krust_api::Cause::new(
                "FieldValueForbidden",
                "allowWatchBookmarks",
                "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
            )],
        ));
    }
    let rv = call.query.get("resourceVersion");
    // The current state first: for sendInitialEvents, and for a watch without a
    // resourceVersion or with "0" (a consistent read when none is given).
    let start = match rv {
        _ if send_initial || matches!(rv, None | Some("0")) => {
            match rv {
                None => {
                    api.cache.sync().await?;
                }
                Some("0") => {}
                Some(text) => api.cache.wait_for(text.parse().unwrap_or(0)).await?,
            }
            let (snapshot, live) = api.cache.snapshot_and_subscribe(&prefix);
            Start::State(
                snapshot.objects.into_iter().map(|(_, o)| o).collect(),
                live,
                snapshot.revision,
            )
        }
        _ => {
            let text = rv.unwrap_or_default();
            let revision: i64 = text.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {text:?}"))
            })?;
            match api.cache.subscribe(revision) {
                Ok(subscription) => Start::From(
                    subscription.backlog,
                    subscription.live,
                    subscription.revision.max(revision),
                ),
                Err(error) => Start::Gone(error),
            }
        }
    };
    let timeout = call
        .query
        .number("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64))
        .unwrap_or(Duration::from_secs(1800 + rand::random::<u64>() % 1800));
    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    let table = wants_table(&call.accept).then(|| (call.clone_shallow(), true));
    let content_type = if table.is_some() {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    let watcher = Watcher {
        selectors,
        prefix,
        table,
        resource: call.resource,
        kind: call.resource.kind,
        api_version: call.resource.api_version(),
        sender,
        bookmarks,
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(timeout, watcher.run(start, send_initial)).await;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver)
        .map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap())
}

impl Watcher {
    async fn run(mut self, start: Start, send_initial: bool) -> Option<()> {
        let (mut live, mut last) = match start {
            Start::Gone(error) => {
                let frame = frame_bytes(
                    "ERROR",
                    &serde_json::to_vec(&error.status()).unwrap_or_default(),
                );
                let _ = self.sender.send(frame).await;
                return Some(());
            }
            Start::State(objects, live, revision) => {
                for object in objects {
                    if self.selectors.matches(&object) {
                        self.send("ADDED", &object).await?;
                    }
                }
                if send_initial {
                    self.bookmark(revision, true).await?;
                }
                (live, revision)
            }
            Start::From(backlog, live, revision) => {
                let mut last = 0;
                for event in backlog {
                    last = event.revision;
                    self.event(&event).await?;
                }
                (live, last.max(revision))
            }
        };
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(event) => {
                        if event.revision <= last {
                            continue;
                        }
                        last = event.revision;
                        self.event(&event).await?;
                    }
                    // A watcher that fell too far behind is ended; the client
                    // watches again from the last resourceVersion it saw.
                    Err(_) => return Some(()),
                },
                _ = ticker.tick(), if self.bookmarks => self.bookmark(last, false).await?,
                _ = self.sender.closed() => return None,
            }
        }
    }

    async fn event(&mut self, event: &CacheEvent) -> Option<()> {
        if !event.key.starts_with(&self.prefix) {
            return Some(());
        }
        let now_matches = self.selectors.matches(&event.object);
        let before_matched = event
            .prev
            .as_ref()
            .is_some_and(|prev| self.selectors.matches(prev));
        let kind = match (event.kind, now_matches, before_matched) {
            (EventType::Deleted, true, _) => "DELETED",
            (EventType::Deleted, false, _) => return Some(()),
            (EventType::Added, true, _) => "ADDED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, true, false) => "ADDED",
            (EventType::Modified, false, true) => "DELETED",
            _ => return Some(()),
        };
        self.send(kind, &event.object).await
    }

    async fn send(&mut self, kind: &str, object: &CachedObject) -> Option<()> {
        let frame = match &mut self.table {
            Some((call, first)) => {
                let rv = object.revision.to_string();
                let object = to_request(self.resource, &object.value());
                let table = table_of(call, &[object], &rv, None, *first);
                *first = false;
                frame_bytes(kind, &serde_json::to_vec(&table).unwrap_or_default())
            }
            None if needs_conversion(self.resource) => {
                let converted = to_request(self.resource, &object.value());
                frame_bytes(kind, &serde_json::to_vec(&converted).unwrap_or_default())
            }
            None => frame_bytes(kind, &object.json),
        };
        self.sender.send(frame).await.ok()
    }

    async fn bookmark(&mut self, revision: i64, initial_events_end: bool) -> Option<()> {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object: Value =
            json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": metadata});
        let frame = frame_bytes("BOOKMARK", &serde_json::to_vec(&object).unwrap_or_default());
        self.sender.send(frame).await.ok()
    }
}

/// One watch line, built around the object's already encoded JSON.
fn frame_bytes(kind: &str, object_json: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object_json.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object_json);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}
