//! From cache changes to work-queue keys: [`forward`] is the one loop every
//! controller here uses to turn what a [`Cache`](crate::cache::Cache) reports into
//! the keys it reconciles.

use std::fmt::Debug;
use std::hash::Hash;

use tokio::sync::mpsc;

use crate::cache::Change;
use crate::workqueue::WorkQueue;

/// Queues the keys `keys_of` names for every change, until the cache goes away.
pub async fn forward<K, Q>(
    mut changes: mpsc::UnboundedReceiver<Change<K>>,
    queue: WorkQueue<Q>,
    keys_of: impl Fn(&Change<K>) -> Vec<Q>,
) where
    Q: Clone + Eq + Hash + Send + Debug + 'static,
{
    while let Some(change) = changes.recv().await {
        for key in keys_of(&change) {
            queue.add(key);
        }
    }
}
