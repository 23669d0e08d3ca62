//! Shared metadata informers: one metadata watch per discovered resource type,
//! fanned out to the controllers as [`ObjectEvent`]s.
//!
//! [`Informers::run`] discovers the server's resources (again every
//! [`RESYNC_PERIOD`], or at once when a controller asks with
//! [`Informers::request_refresh`]), starts a watch for each new type that the
//! selection accepts and stops the watches of types that went away. Each watch keeps
//! the metadata it has seen, so that when the watch has to list again (after a
//! dropped connection or an expired resourceVersion) the objects that vanished in
//! between are reported as deleted: subscribers see every object's life as
//! applied*, deleted, with nothing lost.
//!
//! Watches ask for metadata only (`PartialObjectMetadata`); a server that sends
//! whole objects works too, the rest is ignored.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Notify, mpsc};
use tokio::task::{AbortHandle, JoinSet};

use crate::discovery::{self, Discovered, ResourceType};

/// How often discovery runs again to notice new or removed resource types.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(30);
/// The longest wait between discovery attempts after failures.
const MAX_DISCOVERY_BACKOFF: Duration = Duration::from_secs(30);

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created, changed, or seen in a (re)list.
    Applied,
    /// Gone from the server.
    Deleted,
}

/// One change of one object, with the resource type it belongs to.
#[derive(Clone, Debug)]
pub struct ObjectEvent {
    pub kind: EventKind,
    pub resource: Arc<ResourceType>,
    pub meta: Arc<ObjectMeta>,
}

/// Which discovered resource types to watch.
pub type Selection = fn(&ResourceType) -> bool;

/// The shared informers. Create with [`Informers::new`], subscribe, then
/// [`Informers::run`].
pub struct Informers {
    client: Client,
    select: Selection,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<ObjectEvent>>>,
    discovered: RwLock<Arc<Discovered>>,
    /// Set once the first discovery round has started its watches.
    discovered_once: AtomicBool,
    /// Sync flags of the running watches, by resource.
    watches: Mutex<HashMap<Arc<ResourceType>, Arc<AtomicBool>>>,
    refresh: Notify,
    sync_changed: Notify,
}

impl Informers {
    /// Informers for the resource types `select` accepts.
    pub fn new(client: Client, select: Selection) -> Arc<Informers> {
        Arc::new(Informers {
            client,
            select,
            subscribers: Mutex::new(Vec::new()),
            discovered: RwLock::new(Arc::new(Discovered::default())),
            discovered_once: AtomicBool::new(false),
            watches: Mutex::new(HashMap::new()),
            refresh: Notify::new(),
            sync_changed: Notify::new(),
        })
    }

    /// A stream of every event from now on. Subscribe before [`Informers::run`]
    /// to see every object.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<ObjectEvent> {
        let (sender, receiver) = mpsc::unbounded_channel();
        lock(&self.subscribers).push(sender);
        receiver
    }

    /// The latest discovery result.
    pub fn discovered(&self) -> Arc<Discovered> {
        self.discovered
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Asks for a discovery round now (e.g. an owner reference names a kind that
    /// the latest round did not find).
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Whether discovery ran and every watch has listed its objects at least once.
    pub fn all_synced(&self) -> bool {
        self.discovered_once.load(Ordering::SeqCst)
            && lock(&self.watches)
                .values()
                .all(|synced| synced.load(Ordering::SeqCst))
    }

    /// Waits until [`Informers::all_synced`].
    pub async fn wait_synced(&self) {
        loop {
            let changed = self.sync_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.all_synced() {
                return;
            }
            changed.await;
        }
    }

    /// Discovers and watches, until the process ends.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        let mut running: HashMap<Arc<ResourceType>, (AbortHandle, Arc<Mutex<Known>>)> =
            HashMap::new();
        let mut failures = 0u32;
        loop {
            let wait = match discovery::discover(&self.client).await {
                Ok(discovered) => {
                    let partial = !discovered.failures.is_empty();
                    if let Some(message) = discovered.failure_message() {
                        tracing::warn!("{message}");
                    }
                    self.start_and_stop(&discovered, &mut tasks, &mut running);
                    *self
                        .discovered
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(discovered);
                    self.discovered_once.store(true, Ordering::SeqCst);
                    self.sync_changed.notify_waiters();
                    if partial {
                        failures += 1;
                        retry_delay(failures)
                    } else {
                        failures = 0;
                        RESYNC_PERIOD
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!("resource discovery failed: {error}");
                    retry_delay(failures)
                }
            };
            // Reap finished watch tasks (they only end when aborted).
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.refresh.notified() => {}
            }
        }
    }

    fn start_and_stop(
        self: &Arc<Self>,
        discovered: &Discovered,
        tasks: &mut JoinSet<()>,
        running: &mut HashMap<Arc<ResourceType>, (AbortHandle, Arc<Mutex<Known>>)>,
    ) {
        let wanted: HashSet<Arc<ResourceType>> = discovered
            .preferred
            .iter()
            .filter(|r| (self.select)(r))
            .cloned()
            .collect();
        // A group version that failed discovery this round keeps its watches: its
        // types are most likely still there (upstream keeps them too).
        let failed: HashSet<&str> = discovered
            .failures
            .iter()
            .map(|f| f.group_version.as_str())
            .collect();
        let gone: Vec<Arc<ResourceType>> = running
            .keys()
            .filter(|r| {
                !wanted.contains(*r) && !failed.contains(r.api_resource.api_version.as_str())
            })
            .cloned()
            .collect();
        for resource in gone {
            let (handle, known) = running.remove(&resource).expect("listed above");
            handle.abort();
            lock(&self.watches).remove(&resource);
            tracing::info!(resource = %resource, "stopped watching");
            // What the watch knew is gone from the controllers' point of view.
            let known = std::mem::take(&mut *lock(&known));
            for meta in known.into_values() {
                self.emit(EventKind::Deleted, &resource, meta);
            }
        }
        for resource in wanted {
            if running.contains_key(&resource) {
                continue;
            }
            let synced = Arc::new(AtomicBool::new(false));
            let known = Arc::new(Mutex::new(Known::new()));
            lock(&self.watches).insert(resource.clone(), synced.clone());
            let handle = tasks.spawn(self.clone().watch(resource.clone(), known.clone(), synced));
            running.insert(resource, (handle, known));
        }
    }

    /// Watches one resource type forever (the watcher retries with backoff).
    async fn watch(
        self: Arc<Self>,
        resource: Arc<ResourceType>,
        known: Arc<Mutex<Known>>,
        synced: Arc<AtomicBool>,
    ) {
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.client.clone(), &resource.api_resource);
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        tokio::pin!(stream);
        // Objects seen during a (re)list, before it is complete.
        let mut listing: Option<Known> = None;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(resource = %resource, "watch failed, retrying with backoff: {error}");
                    continue;
                }
            };
            match event {
                Event::Init => listing = Some(Known::new()),
                Event::InitApply(object) => {
                    if let Some(uid) = object.metadata.uid.clone() {
                        listing
                            .get_or_insert_with(Known::new)
                            .insert(uid, Arc::new(object.metadata));
                    }
                }
                Event::InitDone => {
                    let listed = listing.take().unwrap_or_default();
                    let vanished: Vec<Arc<ObjectMeta>> = {
                        let mut known = lock(&known);
                        let vanished = known
                            .iter()
                            .filter(|(uid, _)| !listed.contains_key(*uid))
                            .map(|(_, meta)| meta.clone())
                            .collect();
                        *known = listed.clone();
                        vanished
                    };
                    for meta in vanished {
                        self.emit(EventKind::Deleted, &resource, meta);
                    }
                    for meta in listed.into_values() {
                        self.emit(EventKind::Applied, &resource, meta);
                    }
                    if !synced.swap(true, Ordering::SeqCst) {
                        tracing::debug!(resource = %resource, "watch synced");
                        self.sync_changed.notify_waiters();
                    }
                }
                Event::Apply(object) => {
                    let Some(uid) = object.metadata.uid.clone() else {
                        continue;
                    };
                    let meta = Arc::new(object.metadata);
                    lock(&known).insert(uid, meta.clone());
                    self.emit(EventKind::Applied, &resource, meta);
                }
                Event::Delete(object) => {
                    let Some(uid) = object.metadata.uid.clone() else {
                        continue;
                    };
                    let meta = lock(&known)
                        .remove(&uid)
                        .unwrap_or_else(|| Arc::new(object.metadata));
                    self.emit(EventKind::Deleted, &resource, meta);
                }
            }
        }
    }

    fn emit(&self, kind: EventKind, resource: &Arc<ResourceType>, meta: Arc<ObjectMeta>) {
        let event = ObjectEvent {
            kind,
            resource: resource.clone(),
            meta,
        };
        lock(&self.subscribers).retain(|subscriber| subscriber.send(event.clone()).is_ok());
    }
}

/// The metadata a watch has seen, by uid.
type Known = HashMap<String, Arc<ObjectMeta>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent, so a poisoned lock is
    // still safe to use.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 1 s doubling up to [`MAX_DISCOVERY_BACKOFF`].
fn retry_delay(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    Duration::from_secs(1)
        .saturating_mul(factor)
        .min(MAX_DISCOVERY_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_retries_back_off() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(3), Duration::from_secs(4));
        assert_eq!(retry_delay(100), MAX_DISCOVERY_BACKOFF);
    }
}
