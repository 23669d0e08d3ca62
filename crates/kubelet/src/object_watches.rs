//! Watches of the single ConfigMaps and Secrets the node's pods use, as upstream's
//! kubelet does with its watch-based ConfigMap and Secret managers.
//!
//! A node may read only the objects its own pods name (the API server's Node
//! authorizer), so the agent cannot watch every Secret in the cluster. Instead each
//! pod worker registers the names its pod uses ([`ObjectWatches::track`]); the first
//! user of an object starts a watch on it alone (`fieldSelector=metadata.name=<name>`
//! in its namespace) feeding a cache, the last one to go stops it. Reads
//! ([`ObjectWatches::get`]) come from the caches, so live updates of configMap and
//! secret volumes follow the watch.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, core::NamespaceResourceScope};
use serde::de::DeserializeOwned;

/// One namespaced kind's per-object watches, shared by all pod workers.
pub struct ObjectWatches<K: Resource<DynamicType = ()> + 'static> {
    client: kube::Client,
    /// Keyed by (namespace, name).
    watched: Mutex<HashMap<(String, String), Watched<K>>>,
}

struct Watched<K: Resource<DynamicType = ()> + 'static> {
    cache: Store<K>,
    /// The uids of the pods that use the object.
    users: HashSet<String>,
    watch: tokio::task::AbortHandle,
}

impl<K> ObjectWatches<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            watched: Mutex::new(HashMap::new()),
        }
    }

    /// The cached object, when some pod uses it and it exists.
    pub fn get(&self, namespace: &str, name: &str) -> Option<K> {
        let watched = self.watched.lock().expect("object watches lock");
        let entry = watched.get(&(namespace.to_string(), name.to_string()))?;
        entry
            .cache
            .get(&ObjectRef::new(name).within(namespace))
            .map(|object| (*object).clone())
    }

    /// Makes pod `uid` a user of exactly the objects `names` in `namespace` (watches
    /// start for new ones, and stop for those no pod uses any more), then waits up to
    /// `timeout` for their first lists. True when every cache is filled.
    pub async fn track(
        &self,
        uid: &str,
        namespace: &str,
        names: &[String],
        timeout: Duration,
    ) -> bool {
        let caches: Vec<Store<K>> = {
            let mut watched = self.watched.lock().expect("object watches lock");
            watched.retain(|(ns, name), entry| {
                if ns != namespace || !names.contains(name) {
                    entry.users.remove(uid);
                }
                let keep = !entry.users.is_empty();
                if !keep {
                    entry.watch.abort();
                }
                keep
            });
            names
                .iter()
                .map(|name| {
                    let entry = watched
                        .entry((namespace.to_string(), name.clone()))
                        .or_insert_with(|| self.start(namespace, name));
                    entry.users.insert(uid.to_string());
                    entry.cache.clone()
                })
                .collect()
        };
        let filled = async {
            for cache in &caches {
                let _ = cache.wait_until_ready().await;
            }
        };
        tokio::time::timeout(timeout, filled).await.is_ok()
    }

    /// Pod `uid` uses nothing any more.
    pub fn release(&self, uid: &str) {
        let mut watched = self.watched.lock().expect("object watches lock");
        watched.retain(|_, entry| {
            entry.users.remove(uid);
            let keep = !entry.users.is_empty();
            if !keep {
                entry.watch.abort();
            }
            keep
        });
    }

    fn start(&self, namespace: &str, name: &str) -> Watched<K> {
        let (cache, writer) = reflector::store();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let api = Api::<K>::namespaced(self.client.clone(), namespace);
        let (kind, object) = (K::kind(&()).to_string(), format!("{namespace}/{name}"));
        let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
        let watch = tokio::spawn(stream.for_each(move |event| {
            if let Err(error) = event {
                tracing::warn!(%kind, %object, %error, "watching an object a pod uses failed; retrying");
            }
            async {}
        }));
        Watched {
            cache,
            users: HashSet::new(),
            watch: watch.abort_handle(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for ObjectWatches<K> {
    fn drop(&mut self) {
        let watched = self.watched.get_mut().expect("object watches lock");
        for entry in watched.values() {
            entry.watch.abort();
        }
    }
}
