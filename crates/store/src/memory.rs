//! An in-memory [`Store`] for unit tests of other crates.
//!
//! State is a `BTreeMap` of the latest values plus the list of events since the
//! compacted revision. A read at an older revision starts from the latest state and
//! undoes the newer events one by one, so it needs no per-revision snapshots.
//! Nothing is persisted: dropping the store forgets everything.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::{
    Error, Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream,
};

/// How many write events a watcher may fall behind before its stream fails.
const WATCH_BUFFER: usize = 16 * 1024;

/// An in-memory store. Cheap to create; see the module docs.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
}

#[derive(Default)]
struct Inner {
    current: BTreeMap<String, KeyValue>,
    /// Events with revisions greater than `compacted`, oldest first.
    history: VecDeque<Event>,
    revision: Revision,
    compacted: Revision,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock can not leave the maps half-updated in a way
        // that matters for tests, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `event` as the newest write and tells watchers. Called under the lock
    /// so that watchers see events in revision order.
    fn publish(&self, inner: &mut Inner, event: Event) {
        inner.history.push_back(event.clone());
        let _ = self.events.send(Arc::new(event));
    }
}

/// Keys under `prefix` in ascending order, starting after `start_after`.
fn range<'a>(
    map: &'a BTreeMap<String, KeyValue>,
    prefix: &'a str,
    start_after: Option<&str>,
) -> impl Iterator<Item = &'a KeyValue> + 'a {
    let start = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after.to_string()),
        _ => Bound::Included(prefix.to_string()),
    };
    map.range::<String, _>((start, Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.lock().revision)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().current.get(key).cloned())
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let inner = self.lock();
        let revision = if options.revision == 0 {
            inner.revision
        } else {
            options.revision
        };
        if revision < inner.compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted: inner.compacted,
            });
        }
        if revision > inner.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: inner.revision,
            });
        }
        let limit = if options.limit == 0 {
            usize::MAX
        } else {
            options.limit
        };
        let start_after = options.start_after.as_deref();
        let collect = |map: &BTreeMap<String, KeyValue>| {
            let mut kvs: Vec<KeyValue> = range(map, prefix, start_after)
                .take(limit.saturating_add(1))
                .cloned()
                .collect();
            let more = kvs.len() > limit;
            kvs.truncate(limit);
            (kvs, more)
        };
        let (kvs, more) = if revision == inner.revision {
            collect(&inner.current)
        } else {
            // Undo the events newer than `revision`, newest first, on a copy of the
            // keys under the prefix.
            let mut old: BTreeMap<String, KeyValue> = range(&inner.current, prefix, None)
                .map(|kv| (kv.key.clone(), kv.clone()))
                .collect();
            for event in inner.history.iter().rev() {
                if event.revision() <= revision {
                    break;
                }
                if !event.key().starts_with(prefix) {
                    continue;
                }
                match event {
                    Event::Put {
                        prev: Some(prev), ..
                    }
                    | Event::Delete { prev, .. } => {
                        old.insert(prev.key.clone(), prev.clone());
                    }
                    Event::Put { kv, prev: None } => {
                        old.remove(&kv.key);
                    }
                }
            }
            collect(&old)
        };
        Ok(ListResult {
            kvs,
            revision,
            more,
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        Ok(range(&self.lock().current, prefix, None).count() as u64)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let mut inner = self.lock();
        if inner.current.contains_key(key) {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        inner.revision += 1;
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: inner.revision,
            mod_revision: inner.revision,
        };
        inner.current.insert(key.to_string(), kv.clone());
        let revision = inner.revision;
        self.publish(&mut inner, Event::Put { kv, prev: None });
        Ok(revision)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let mut inner = self.lock();
        let prev = match inner.current.get(key) {
            Some(kv) if kv.mod_revision == expected => kv.clone(),
            current => {
                return Err(Error::Conflict {
                    key: key.to_string(),
                    expected,
                    current: current.cloned().map(Box::new),
                });
            }
        };
        inner.revision += 1;
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: prev.create_revision,
            mod_revision: inner.revision,
        };
        inner.current.insert(key.to_string(), kv.clone());
        let revision = inner.revision;
        self.publish(
            &mut inner,
            Event::Put {
                kv,
                prev: Some(prev),
            },
        );
        Ok(revision)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let mut inner = self.lock();
        let Some(current) = inner.current.get(key) else {
            return Err(Error::NotFound(key.to_string()));
        };
        if let Some(expected) = expected
            && current.mod_revision != expected
        {
            return Err(Error::Conflict {
                key: key.to_string(),
                expected,
                current: Some(Box::new(current.clone())),
            });
        }
        let prev = inner.current.remove(key).expect("checked above");
        inner.revision += 1;
        let revision = inner.revision;
        self.publish(
            &mut inner,
            Event::Delete {
                prev: prev.clone(),
                revision,
            },
        );
        Ok((revision, prev))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribing and copying the history under one lock leaves no gap and no
        // duplicate between the replayed and the live events.
        let inner = self.lock();
        if after != 0 && after < inner.compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted: inner.compacted,
            });
        }
        let after = if after == 0 { inner.revision } else { after };
        let replay: Vec<Result<Event>> = inner
            .history
            .iter()
            .filter(|e| e.revision() > after && e.key().starts_with(prefix))
            .cloned()
            .map(Ok)
            .collect();
        let live = self.events.subscribe();
        drop(inner);
        let prefix = prefix.to_string();
        let live = futures::stream::unfold(Some(live), move |state| {
            let prefix = prefix.clone();
            async move {
                let mut rx = state?;
                loop {
                    match rx.recv().await {
                        Ok(event)
                            if event.revision() > after && event.key().starts_with(&prefix) =>
                        {
                            return Some((Ok(Event::clone(&event)), Some(rx)));
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let err = Error::Backend(format!(
                                "watch fell behind by {n} events and was stopped; \
                                 watch again from the last revision received"
                            ));
                            return Some((Err(err), None));
                        }
                    }
                }
            }
        });
        Ok(Box::pin(futures::StreamExt::chain(
            futures::stream::iter(replay),
            live,
        )))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut inner = self.lock();
        if revision > inner.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: inner.revision,
            });
        }
        if revision <= inner.compacted {
            return Ok(());
        }
        // Events at or before `revision` are not needed to read at `revision` or
        // later, nor to watch from it.
        while inner
            .history
            .front()
            .is_some_and(|e| e.revision() <= revision)
        {
            inner.history.pop_front();
        }
        inner.compacted = revision;
        Ok(())
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.lock().compacted)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_watcher_that_falls_behind_gets_an_error_then_the_end() {
        let store = MemoryStore::new();
        let mut watch = store.watch("/lag/", 0).await.unwrap();
        for i in 0..WATCH_BUFFER + 10 {
            store
                .create(&format!("/lag/{i}"), Bytes::new())
                .await
                .unwrap();
        }
        match watch.next().await {
            Some(Err(e)) => assert!(e.to_string().contains("fell behind"), "{e}"),
            other => panic!("expected the lag error first, got {other:?}"),
        }
        assert!(watch.next().await.is_none());
    }
}
