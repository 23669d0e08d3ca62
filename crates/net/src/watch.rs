//! Watching the API for the node's network parts: every object of a type mirrored
//! into a reflector store, with a wake-up after each event so that the part resyncs.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};

/// Mirrors every object of `api` into `writer`, notifying `changed` after each event;
/// runs until the task is dropped (watch errors are retried with backoff).
pub async fn mirror<K>(
    api: kube::Api<K>,
    writer: reflector::store::Writer<K>,
    changed: Arc<tokio::sync::Notify>,
) where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    K: serde::de::DeserializeOwned,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        if let Err(error) = event {
            tracing::warn!(%error, "watch error; retrying");
        }
        changed.notify_one();
    }
}

/// Waits for the next reason to sync: a change (then `coalesce` longer, so that a
/// burst of changes makes one sync) or `resync` without one.
pub async fn next_sync(
    changed: &tokio::sync::Notify,
    resync: std::time::Duration,
    coalesce: std::time::Duration,
) {
    let _ = tokio::time::timeout(resync, changed.notified()).await;
    tokio::time::sleep(coalesce).await;
}
