//! Shared typed caches: one watch per resource type (Pods, ReplicaSets, Nodes, ...)
//! for every controller that needs whole objects, the typed counterpart of the
//! metadata-only [`crate::informers`].
//!
//! [`Caches::get`] hands out the one [`Cache`] of a type, starting its watch the
//! first time it is asked for. A cache keeps the latest version of every object and
//! tells its subscribers about each change ([`Change`]). A new subscriber first gets
//! every object already cached as `Applied`, so subscribing late misses nothing; when
//! the watch has to list again (a dropped connection, an expired resourceVersion), the
//! objects that vanished in between are reported as `Deleted`.
//!
//! Controllers use the changes only to decide *which* keys to reconcile, and read the
//! current state from the cache ([`Cache::get`], [`Cache::list`]) when they do.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

/// What a subscriber hears about one object.
#[derive(Debug)]
pub enum Change<K> {
    /// Created, changed, or seen when subscribing or relisting.
    Applied(Arc<K>),
    /// Gone from the server (its last known state).
    Deleted(Arc<K>),
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(object) => Change::Applied(object.clone()),
            Change::Deleted(object) => Change::Deleted(object.clone()),
        }
    }
}

impl<K> Change<K> {
    /// The object the change is about.
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Applied(object) | Change::Deleted(object) => object,
        }
    }
}

/// The key of an object in a cache: namespace (empty for cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of `object`.
    pub fn of<K: Resource>(object: &K) -> ObjectKey {
        ObjectKey::new(object.namespace().unwrap_or_default(), object.name_any())
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What a type must be to be cached.
pub trait Cacheable:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Cacheable for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// The cached objects of one type, kept current by one watch.
pub struct Cache<K> {
    objects: RwLock<HashMap<ObjectKey, Arc<K>>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Change<K>>>>,
    synced: watch::Sender<bool>,
}

impl<K: Cacheable> Cache<K> {
    fn new() -> Cache<K> {
        Cache {
            objects: RwLock::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            synced: watch::channel(false).0,
        }
    }

    /// The cached object `namespace/name` (namespace empty for cluster-scoped types).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = ObjectKey::new(namespace, name);
        self.objects.read().unwrap().get(&key).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.objects.read().unwrap().values().cloned().collect()
    }

    /// The cached objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.objects
            .read()
            .unwrap()
            .iter()
            .filter(|(key, _)| key.namespace == namespace)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// The cached objects that `keep` accepts.
    pub fn filter(&self, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.objects
            .read()
            .unwrap()
            .values()
            .filter(|object| keep(object))
            .cloned()
            .collect()
    }

    /// Changes from now on, after every object already cached as `Applied`.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Change<K>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        // Holding the object lock while registering keeps a change from slipping in
        // between the replay and the registration.
        let objects = self.objects.read().unwrap();
        for object in objects.values() {
            let _ = sender.send(Change::Applied(object.clone()));
        }
        self.subscribers.lock().unwrap().push(sender);
        receiver
    }

    /// Whether the first list has been cached.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first list has been cached.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|synced| *synced).await;
    }

    fn publish(&self, change: Change<K>) {
        self.subscribers
            .lock()
            .unwrap()
            .retain(|subscriber| subscriber.send(change.clone()).is_ok());
    }

    fn apply(&self, object: K) {
        let object = Arc::new(object);
        let mut objects = self.objects.write().unwrap();
        objects.insert(ObjectKey::of(object.as_ref()), object.clone());
        self.publish(Change::Applied(object));
    }

    fn delete(&self, object: K) {
        let mut objects = self.objects.write().unwrap();
        let key = ObjectKey::of(&object);
        objects.remove(&key);
        self.publish(Change::Deleted(Arc::new(object)));
    }

    /// Replaces the whole content with a fresh list, reporting what vanished.
    fn replace(&self, listed: Vec<K>) {
        let mut fresh: HashMap<ObjectKey, Arc<K>> = listed
            .into_iter()
            .map(|object| (ObjectKey::of(&object), Arc::new(object)))
            .collect();
        let mut objects = self.objects.write().unwrap();
        std::mem::swap(&mut *objects, &mut fresh);
        let previous = fresh;
        for (key, object) in previous {
            if !objects.contains_key(&key) {
                self.publish(Change::Deleted(object));
            }
        }
        for object in objects.values() {
            self.publish(Change::Applied(object.clone()));
        }
        drop(objects);
        self.synced.send_replace(true);
    }

    /// Keeps the cache current from `api` until the process ends. Watch errors are
    /// retried with kube-rs's default backoff.
    async fn run(self: Arc<Self>, api: Api<K>, config: watcher::Config) {
        let mut listing: Vec<K> = Vec::new();
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(object)) => self.apply(object),
                Ok(Event::Delete(object)) => self.delete(object),
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(object)) => listing.push(object),
                Ok(Event::InitDone) => self.replace(std::mem::take(&mut listing)),
                Err(error) => tracing::debug!(
                    kind = %K::kind(&()),
                    "watch failed, retrying: {error}"
                ),
            }
        }
    }
}

/// The shared caches of one controller manager: one [`Cache`] per type, created and
/// started on first use. Cloning gives another handle to the same caches; when the
/// last handle is dropped (the controller manager stopped, e.g. on losing its Lease),
/// their watches stop.
#[derive(Clone)]
pub struct Caches {
    client: Client,
    caches: Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
    watches: Arc<Watches>,
}

/// The watch tasks of the caches, aborted when dropped.
struct Watches(Mutex<Vec<tokio::task::AbortHandle>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for watch in self.0.lock().unwrap().drain(..) {
            watch.abort();
        }
    }
}

impl Caches {
    pub fn new(client: Client) -> Caches {
        Caches {
            client,
            caches: Arc::new(Mutex::new(HashMap::new())),
            watches: Arc::new(Watches(Mutex::new(Vec::new()))),
        }
    }

    /// The client the caches watch with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The cache of every `K` in the cluster, started (on the current tokio runtime)
    /// the first time it is asked for.
    pub fn get<K: Cacheable>(&self) -> Arc<Cache<K>> {
        let mut caches = self.caches.lock().unwrap();
        let entry = caches.entry(TypeId::of::<K>()).or_insert_with(|| {
            let cache = Arc::new(Cache::<K>::new());
            let api = Api::<K>::all(self.client.clone());
            let watch = tokio::spawn(cache.clone().run(api, watcher::Config::default()));
            self.watches.0.lock().unwrap().push(watch.abort_handle());
            cache as Arc<dyn Any + Send + Sync>
        });
        entry
            .clone()
            .downcast::<Cache<K>>()
            .expect("the cache of a type is of that type")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn config_map(namespace: &str, name: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.namespace = Some(namespace.into());
        object.metadata.name = Some(name.into());
        object
    }

    fn names(changes: &mut mpsc::UnboundedReceiver<Change<ConfigMap>>) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(change) = changes.try_recv() {
            let kind = match change {
                Change::Applied(_) => "applied",
                Change::Deleted(_) => "deleted",
            };
            seen.push(format!("{kind} {}", change.object().name_any()));
        }
        seen.sort();
        seen
    }

    #[test]
    fn a_late_subscriber_hears_about_every_cached_object_first() {
        let cache = Cache::new();
        cache.apply(config_map("a", "one"));
        cache.apply(config_map("b", "two"));
        let mut changes = cache.subscribe();
        assert_eq!(names(&mut changes), ["applied one", "applied two"]);
        cache.delete(config_map("a", "one"));
        assert_eq!(names(&mut changes), ["deleted one"]);
        assert_eq!(cache.list().len(), 1);
        assert!(cache.get("b", "two").is_some());
        assert_eq!(cache.list_namespace("a").len(), 0);
    }

    #[test]
    fn a_relist_reports_what_vanished_and_marks_the_cache_synced() {
        let cache = Cache::new();
        cache.apply(config_map("a", "gone"));
        cache.apply(config_map("a", "kept"));
        let mut changes = cache.subscribe();
        names(&mut changes);
        assert!(!cache.is_synced());
        cache.replace(vec![config_map("a", "kept"), config_map("a", "new")]);
        assert!(cache.is_synced());
        assert_eq!(
            names(&mut changes),
            ["applied kept", "applied new", "deleted gone"]
        );
        assert!(cache.get("a", "gone").is_none());
    }
}
