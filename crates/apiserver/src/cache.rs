//! The watch cache: every object of the store in memory, kept current by one store
//! watch, with a window of recent events so watchers can start from a recent
//! resourceVersion. LIST and WATCH are served from here; each object is parsed and
//! encoded once and shared between all readers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use krust_store::{Event, Revision, Store};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};

/// Prefix of every key the API server keeps.
pub const REGISTRY_PREFIX: &str = "/registry/";

/// How many recent events are kept for watchers starting from an older revision.
const EVENT_WINDOW: usize = 20_000;

/// One object as cached: its JSON (resourceVersion set) and the few fields that
/// selectors read most. The parsed form is not kept: a parsed object costs about
/// ten times its JSON, and most reads only copy the JSON out.
#[derive(Debug)]
pub struct CachedObject {
    pub json: Bytes,
    pub revision: Revision,
    pub name: String,
    pub namespace: String,
    pub labels: Option<Map<String, Value>>,
}

impl CachedObject {
    /// Builds a cached object from stored bytes, stamping the resourceVersion.
    pub fn from_stored(bytes: &[u8], revision: Revision) -> Option<Arc<CachedObject>> {
        let mut value: Value = serde_json::from_slice(bytes).ok()?;
        set_resource_version(&mut value, revision);
        Some(Arc::new(CachedObject::from_value(&value, revision)?))
    }

    fn from_value(value: &Value, revision: Revision) -> Option<CachedObject> {
        let meta = &value["metadata"];
        let text = |field: &str| meta[field].as_str().unwrap_or("").to_string();
        Some(CachedObject {
            json: Bytes::from(serde_json::to_vec(value).ok()?),
            revision,
            name: text("name"),
            namespace: text("namespace"),
            labels: meta["labels"]
                .as_object()
                .filter(|l| !l.is_empty())
                .cloned(),
        })
    }

    /// The parsed object.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(value: &mut Value, revision: Revision) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".to_string(),
            Value::String(revision.to_string()),
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change seen by the cache.
#[derive(Debug)]
pub struct CacheEvent {
    pub kind: EventType,
    pub key: String,
    /// The object after the change (for a deletion: its last state, with the
    /// deletion's resourceVersion).
    pub object: Arc<CachedObject>,
    /// The object before the change.
    pub prev: Option<Arc<CachedObject>>,
    pub revision: Revision,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Arc<CachedObject>>,
    revision: Revision,
    events: VecDeque<Arc<CacheEvent>>,
    /// Events with revisions above this one are all in `events`.
    window_start: Revision,
}

/// The watch cache of the whole registry.
pub struct WatchCache {
    state: RwLock<State>,
    live: broadcast::Sender<Arc<CacheEvent>>,
    revision: watch::Sender<Revision>,
    store: Arc<dyn Store>,
}

/// A snapshot of objects under a prefix at one revision.
pub struct Snapshot {
    pub objects: Vec<(String, Arc<CachedObject>)>,
    pub revision: Revision,
}

/// A watcher's start: the events it missed, then the live channel.
pub struct Subscription {
    pub backlog: Vec<Arc<CacheEvent>>,
    pub live: broadcast::Receiver<Arc<CacheEvent>>,
    pub revision: Revision,
}

impl WatchCache {
    /// Loads the whole registry and starts following the store.
    pub async fn start(store: Arc<dyn Store>) -> anyhow::Result<Arc<WatchCache>> {
        let (live, _) = broadcast::channel(16_384);
        let (revision, _) = watch::channel(0);
        let cache = Arc::new(WatchCache {
            state: RwLock::new(State::default()),
            live,
            revision,
            store: store.clone(),
        });
        let start = cache.load().await?;
        // The first watch is opened before anyone can write, so no write falls
        // between the initial list and the watch (a watch from revision 0 would
        // only see writes after it is opened).
        let stream = store.watch(REGISTRY_PREFIX, start).await?;
        let follower = cache.clone();
        tokio::spawn(async move { follower.follow(stream, start).await });
        Ok(cache)
    }

    async fn load(&self) -> anyhow::Result<Revision> {
        let list = self
            .store
            .list(REGISTRY_PREFIX, krust_store::ListOptions::default())
            .await?;
        let mut state = self.state.write().unwrap();
        state.objects.clear();
        for kv in list.kvs {
            if let Some(object) = CachedObject::from_stored(&kv.value, kv.mod_revision) {
                state.objects.insert(kv.key, object);
            }
        }
        state.revision = list.revision;
        state.window_start = list.revision;
        state.events.clear();
        drop(state);
        self.revision.send_replace(list.revision);
        Ok(list.revision)
    }

    async fn follow(self: Arc<Self>, first: krust_store::WatchStream, mut from: Revision) {
        let mut next = Some(Ok(first));
        loop {
            let opened = match next.take() {
                Some(stream) => stream,
                // Resuming from revision 0 would skip writes: reload instead.
                None if from == 0 => Err(krust_store::Error::Compacted {
                    requested: 0,
                    compacted: 0,
                }),
                None => self.store.watch(REGISTRY_PREFIX, from).await,
            };
            match opened {
                Ok(mut stream) => {
                    while let Some(event) = stream.next().await {
                        match event {
                            Ok(event) => {
                                from = event.revision();
                                self.apply(event);
                            }
                            Err(error) => {
                                tracing::warn!(%error, "store watch ended; resuming");
                                break;
                            }
                        }
                    }
                }
                Err(krust_store::Error::Compacted { .. }) => {
                    tracing::warn!("watch cache fell behind compaction; reloading");
                    match self.load().await {
                        Ok(revision) => from = revision,
                        Err(error) => tracing::error!(%error, "reloading the watch cache failed"),
                    }
                }
                Err(error) => tracing::warn!(%error, "store watch failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn apply(&self, event: Event) {
        let revision = event.revision();
        let mut state = self.state.write().unwrap();
        if revision <= state.revision {
            return;
        }
        let cache_event = match event {
            Event::Put { kv, .. } => {
                let Some(object) = CachedObject::from_stored(&kv.value, kv.mod_revision) else {
                    tracing::error!(key = kv.key, "stored object is not JSON; ignored");
                    state.revision = revision;
                    return;
                };
                let prev = state.objects.insert(kv.key.clone(), object.clone());
                CacheEvent {
                    kind: if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    key: kv.key,
                    object,
                    prev,
                    revision,
                }
            }
            Event::Delete { prev, revision } => {
                let old = state.objects.remove(&prev.key);
                let object = CachedObject::from_stored(&prev.value, revision)
                    .or_else(|| old.clone())
                    .expect("deleted object");
                CacheEvent {
                    kind: EventType::Deleted,
                    key: prev.key,
                    object,
                    prev: old,
                    revision,
                }
            }
        };
        let cache_event = Arc::new(cache_event);
        state.revision = revision;
        state.events.push_back(cache_event.clone());
        while state.events.len() > EVENT_WINDOW {
            if let Some(old) = state.events.pop_front() {
                state.window_start = old.revision;
            }
        }
        // Sent under the lock so a subscriber sees every event exactly once.
        let _ = self.live.send(cache_event);
        drop(state);
        self.revision.send_replace(revision);
    }

    /// The latest revision the cache has applied.
    pub fn revision(&self) -> Revision {
        self.state.read().unwrap().revision
    }

    /// Waits until the cache has applied `revision` (at most a few seconds).
    pub async fn wait_for(&self, revision: Revision) -> Result<(), crate::errors::ApiError> {
        let mut receiver = self.revision.subscribe();
        let wait = receiver.wait_for(|current| *current >= revision);
        match tokio::time::timeout(Duration::from_secs(3), wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(crate::errors::ApiError::timeout(format!(
                "Too large resource version: {revision}, current: {}",
                self.revision()
            ))),
        }
    }

    /// Waits until the cache holds every write the store has acknowledged.
    pub async fn sync(&self) -> Result<Revision, crate::errors::ApiError> {
        let current = self.store.current_revision().await?;
        self.wait_for(current).await?;
        Ok(current.max(self.revision()))
    }

    /// One object.
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.state.read().unwrap().objects.get(key).cloned()
    }

    /// Objects under `prefix` with keys after `start_after`, at the cache's revision.
    pub fn list(&self, prefix: &str, start_after: Option<&str>) -> Snapshot {
        state_snapshot(&self.state.read().unwrap(), prefix, start_after)
    }

    /// Starts watching from `after`: the events since then and the live channel.
    /// Fails with 410 Gone when `after` is older than the event window.
    pub fn subscribe(&self, after: Revision) -> Result<Subscription, crate::errors::ApiError> {
        let state = self.state.read().unwrap();
        if after < state.window_start {
            return Err(crate::errors::ApiError::gone(format!(
                "too old resource version: {after} ({})",
                state.window_start
            )));
        }
        let backlog = state
            .events
            .iter()
            .filter(|event| event.revision > after)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            live: self.live.subscribe(),
            revision: state.revision,
        })
    }

    /// Starts watching with the current state: a snapshot of `prefix` and the live
    /// channel positioned right after it.
    pub fn snapshot_and_subscribe(
        &self,
        prefix: &str,
    ) -> (Snapshot, broadcast::Receiver<Arc<CacheEvent>>) {
        let state = self.state.read().unwrap();
        // Subscribed under the lock: the next event sent is the first after the snapshot.
        let live = self.live.subscribe();
        (state_snapshot(&state, prefix, None), live)
    }
}

/// Objects under `prefix` with keys after `start_after`, at the state's revision.
fn state_snapshot(state: &State, prefix: &str, start_after: Option<&str>) -> Snapshot {
    use std::ops::Bound;
    let start = match start_after {
        Some(after) => Bound::Excluded(after),
        None => Bound::Included(prefix),
    };
    let objects = state
        .objects
        .range::<str, _>((start, Bound::Unbounded))
        .take_while(|(key, _)| key.starts_with(prefix))
        .map(|(key, object)| (key.clone(), object.clone()))
        .collect();
    Snapshot {
        objects,
        revision: state.revision,
    }
}
