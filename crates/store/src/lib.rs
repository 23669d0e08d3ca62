//! The cluster store: one revisioned key-value contract, several backends.
//!
//! Every object krust keeps lives under a key (`/registry/<group>/<resource>/<ns>/<name>`)
//! in a [`Store`]. The store has one cluster-wide revision counter: every successful
//! write (create, update, delete) bumps it by one and stamps the key with it
//! (`mod_revision`). That revision is what the API server publishes as an object's
//! `resourceVersion`, and what LIST and WATCH are positioned on.
//!
//! Backends: [`sqlite`] (embedded default), [`etcd`] (v3 API) and [`memory`] (unit
//! tests only). All of them pass the same contract tests (`tests/contract.rs`).
//!
//! A newcomer starts at the [`Store`] trait.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

pub mod etcd;
pub mod memory;
pub mod sqlite;

/// A cluster-wide revision. Revisions start at 1 and grow by one per write.
pub type Revision = i64;

/// One key with its value and revisions, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// What a watch reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A key was created (`prev` is None) or updated (`prev` is its value before).
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A key was deleted at `revision`; `prev` is its last value.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    /// The revision of the write this event reports.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
    /// The key this event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// Options of [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// List as of this revision; 0 means the latest.
    pub revision: Revision,
    /// Only keys strictly greater than this one (for paging).
    pub start_after: Option<String>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
}

/// The answer of [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// Keys in ascending order.
    pub kvs: Vec<KeyValue>,
    /// The revision the list was read at (the latest revision when none was asked).
    pub revision: Revision,
    /// Whether more keys under the prefix follow the last one returned.
    pub more: bool,
}

/// Errors of the store contract.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// The key's mod_revision was not the expected one. Carries the current value
    /// (None when the key no longer exists).
    #[error("key {key} was modified: expected revision {expected}")]
    Conflict {
        key: String,
        expected: Revision,
        current: Option<Box<KeyValue>>,
    },
    /// The revision asked for was compacted away.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The revision asked for is newer than the store's current revision.
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stream of watch events, in revision order. It ends with an error if the
/// watch can not continue (for example the backend lost its history).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// The revisioned key-value contract.
///
/// Writes are atomic and durable when they return `Ok`: an acknowledged write
/// survives a crash of the process at any moment.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest revision (0 for an empty store).
    async fn current_revision(&self) -> Result<Revision>;

    /// The latest value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, in ascending key order.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult>;

    /// Counts keys starting with `prefix` at the latest revision.
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Creates `key` if it does not exist. Returns the new revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;

    /// Replaces `key` if its mod_revision is `expected`. Returns the new revision.
    ///
    /// Fails with [`Error::Conflict`] when the key's mod_revision differs, carrying the
    /// current value, or `current: None` when the key does not exist (any more).
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;

    /// Deletes `key`, if `expected` is given only when its mod_revision matches.
    /// Returns the revision of the deletion and the deleted value.
    ///
    /// Fails with [`Error::NotFound`] when the key does not exist (whether or not
    /// `expected` is given) and with [`Error::Conflict`] when `expected` differs.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)>;

    /// Events for keys under `prefix` with revisions strictly greater than `after`.
    /// `after` = 0 starts at the current revision (only new events).
    ///
    /// Fails with [`Error::Compacted`] when `after` is older than the compacted
    /// revision. Events newer than `after` that happened before the call are replayed
    /// first, then live events follow. `after` may be ahead of the current revision.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Forgets history older than `revision`: later reads or watches at an older
    /// revision fail with [`Error::Compacted`]. Latest values are kept.
    ///
    /// Compacting at or below the already compacted revision does nothing; a
    /// revision newer than the current one fails with [`Error::FutureRevision`].
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The oldest revision that can still be read or watched from (0 when nothing
    /// was compacted yet).
    async fn compacted_revision(&self) -> Result<Revision>;
}

/// The end of the key range holding every key that starts with `prefix`: the
/// smallest byte string greater than all of them. `None` when there is no such
/// bound (an empty prefix, or one made only of 0xff bytes): the range is open-ended.
pub fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Opens the datastore named by `datastore` (the `--datastore` flag).
///
/// Accepted forms:
/// - `None`: the embedded SQLite store at `<data_dir>/state.db` (the directory is
///   created when missing);
/// - `sqlite:///absolute/path.db`: the embedded SQLite store in that file;
/// - `etcd://host:port[,host:port...]`: an etcd v3 cluster (plain HTTP endpoints).
pub async fn open(datastore: Option<&str>, data_dir: &Path) -> Result<Arc<dyn Store>> {
    const FORMS: &str = "accepted forms are `sqlite:///absolute/path.db` and \
        `etcd://host:port[,host:port...]`, or no value for SQLite in the data directory";
    let Some(spec) = datastore else {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::Backend(format!(
                "can not create data directory {}: {e}; check the path and its permissions",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join("state.db");
        return open_sqlite(path).await;
    };
    if let Some(path) = spec.strip_prefix("sqlite://") {
        let path = Path::new(path);
        if !path.is_absolute() {
            return Err(Error::Backend(format!(
                "datastore {spec:?}: the SQLite path must be absolute, like \
                 `sqlite:///var/lib/krust/state.db` (three slashes)"
            )));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::Backend(format!(
                    "datastore {spec:?}: can not create directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        return open_sqlite(path.to_path_buf()).await;
    }
    if let Some(hosts) = spec.strip_prefix("etcd://") {
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("http://{h}"))
            .collect();
        if endpoints.is_empty() || endpoints.iter().any(|e| e[7..].contains('/')) {
            return Err(Error::Backend(format!(
                "datastore {spec:?}: expected `etcd://host:port[,host:port...]` with no path"
            )));
        }
        let store = etcd::EtcdStore::connect(&endpoints).await?;
        return Ok(Arc::new(store));
    }
    Err(Error::Backend(format!(
        "unknown datastore {spec:?}: {FORMS}"
    )))
}

async fn open_sqlite(path: std::path::PathBuf) -> Result<Arc<dyn Store>> {
    let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
        .await
        .map_err(|e| Error::Backend(format!("opening the SQLite store panicked: {e}")))??;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end("a\u{7f}"), Some(b"a\x80".to_vec()));
        assert_eq!(prefix_end(""), None);
    }

    #[tokio::test]
    async fn open_rejects_unknown_forms_and_names_the_accepted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(Some("mysql://x"), dir.path()).await.err().unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("sqlite:///") && msg.contains("etcd://"),
            "{msg}"
        );
        let err = open(Some("sqlite://relative.db"), dir.path())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("absolute"), "{err}");
    }

    #[tokio::test]
    async fn open_defaults_to_sqlite_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = open(None, &data).await.unwrap();
        store.create("/k", Bytes::from_static(b"v")).await.unwrap();
        assert!(data.join("state.db").exists());
        let path = dir.path().join("other.db");
        let spec = format!("sqlite://{}", path.display());
        let store = open(Some(&spec), dir.path()).await.unwrap();
        store.create("/k", Bytes::from_static(b"v")).await.unwrap();
        assert!(path.exists());
    }
}
