//! The etcd (v3 API) backend, for clusters that keep their state in etcd.
//!
//! etcd's revisions are used as ours unchanged. Note that a fresh etcd is already
//! at revision 1, so its first write gets revision 2.
//!
//! - create: `txn(create_revision(key) == 0 ? put : -)`;
//! - update: `txn(mod_revision(key) == expected ? put : get)` (a missing key is a
//!   conflict with no current value);
//! - delete: `txn(exists [&& mod_revision == expected] ? delete : get)`;
//! - list: a range `[prefix, prefix_end)` with revision and limit; etcd's `more`;
//! - watch: etcd's watch with `start_revision = after + 1` and `prev_kv`;
//! - compact: etcd's compaction (physical, so it is done when the call returns).
//!
//! etcd does not tell its compacted revision directly; [`EtcdStore`] remembers the
//! highest one it saw and confirms it with a read at that revision (see
//! `compacted_revision`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};

use crate::{
    Error, Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream,
    prefix_end,
};

/// How long `connect` waits for the cluster to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A store backed by an etcd cluster.
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
    /// A lower bound of etcd's compacted revision (0 when none is known).
    compacted: AtomicI64,
}

/// What an etcd error means for the store contract.
enum EtcdFailure {
    Compacted,
    FutureRevision,
    Other(String),
}

fn classify(error: etcd_client::Error) -> EtcdFailure {
    let text = error.to_string();
    if text.contains("required revision has been compacted") {
        EtcdFailure::Compacted
    } else if text.contains("required revision is a future revision") {
        EtcdFailure::FutureRevision
    } else {
        EtcdFailure::Other(text)
    }
}

fn backend(error: etcd_client::Error) -> Error {
    Error::Backend(format!("etcd: {error}"))
}

/// The first key of a range starting at `prefix` (etcd rejects an empty key).
fn range_start(prefix: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        vec![0]
    } else {
        prefix.to_vec()
    }
}

/// The end of the range of keys under `prefix` (`\0` means "no end" to etcd).
fn range_end(prefix: &str) -> Vec<u8> {
    prefix_end(prefix).unwrap_or_else(|| vec![0])
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = kv.key_str().map_err(|e| {
        Error::Backend(format!(
            "etcd returned a key that is not UTF-8 ({e}); krust only stores UTF-8 keys"
        ))
    })?;
    Ok(KeyValue {
        key: key.to_string(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| Error::Backend("etcd answered without a response header".to_string()))
}

/// The value read by the `get` in a failed transaction's else branch.
fn else_value(response: &etcd_client::TxnResponse) -> Result<Option<KeyValue>> {
    for op in response.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            return get.kvs().first().map(convert).transpose();
        }
    }
    Ok(None)
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port` or
    /// `host:port`) and checks that it answers.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| {
                Error::Backend(format!(
                    "can not connect to etcd at {}: {e}; check the endpoints",
                    endpoints.join(",")
                ))
            })?;
        let store = EtcdStore {
            client,
            endpoints: endpoints.to_vec(),
            compacted: AtomicI64::new(0),
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, store.current_revision()).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(e)) => Err(Error::Backend(format!(
                "etcd at {} does not answer: {e}; check that it is running and reachable",
                endpoints.join(",")
            ))),
            Err(_) => Err(Error::Backend(format!(
                "etcd at {} did not answer within {CONNECT_TIMEOUT:?}; check that it is \
                 running and reachable",
                endpoints.join(",")
            ))),
        }
    }

    /// The endpoints this store talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Whether a read at `revision` is still possible (it is not compacted away).
    async fn readable_at(&self, revision: Revision) -> Result<bool> {
        let options = GetOptions::new().with_count_only().with_revision(revision);
        match self.client.kv_client().get(vec![0], Some(options)).await {
            Ok(_) => Ok(true),
            Err(e) => match classify(e) {
                EtcdFailure::Compacted => Ok(false),
                EtcdFailure::FutureRevision => Ok(true),
                EtcdFailure::Other(text) => Err(Error::Backend(format!("etcd: {text}"))),
            },
        }
    }

    async fn compacted_error(&self, requested: Revision) -> Error {
        match self.compacted_revision().await {
            Ok(compacted) => Error::Compacted {
                requested,
                compacted,
            },
            Err(e) => e,
        }
    }

    async fn future_error(&self, requested: Revision) -> Error {
        match self.current_revision().await {
            Ok(current) => Error::FutureRevision { requested, current },
            Err(e) => e,
        }
    }
}

/// Turns one watch response into events; `Err` when etcd ended the watch.
fn watch_events(response: &etcd_client::WatchResponse, after: Revision) -> Result<Vec<Event>> {
    if response.compact_revision() > 0 {
        return Err(Error::Compacted {
            requested: after,
            compacted: response.compact_revision(),
        });
    }
    if response.canceled() {
        return Err(Error::Backend(format!(
            "etcd cancelled the watch: {}; watch again",
            response.cancel_reason()
        )));
    }
    let mut events = Vec::with_capacity(response.events().len());
    for event in response.events() {
        let Some(kv) = event.kv() else {
            return Err(Error::Backend(
                "etcd sent a watch event without a key".to_string(),
            ));
        };
        let kv = convert(kv)?;
        let prev = event.prev_kv().map(convert).transpose()?;
        events.push(match event.event_type() {
            EventType::Put => Event::Put { kv, prev },
            EventType::Delete => Event::Delete {
                revision: kv.mod_revision,
                prev: prev.unwrap_or(KeyValue {
                    // etcd leaves prev_kv out when it was compacted away already.
                    value: Bytes::new(),
                    ..kv
                }),
            },
        });
    }
    Ok(events)
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision> {
        let options = GetOptions::new().with_count_only();
        let response = self
            .client
            .kv_client()
            .get(vec![0], Some(options))
            .await
            .map_err(backend)?;
        header_revision(response.header())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(backend)?;
        response.kvs().first().map(convert).transpose()
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let start = match options.start_after.as_deref() {
            Some(after) if after >= prefix => {
                let mut start = after.as_bytes().to_vec();
                start.push(0);
                start
            }
            _ => range_start(prefix.as_bytes()),
        };
        let get_options = GetOptions::new()
            .with_range(range_end(prefix))
            .with_revision(options.revision)
            .with_limit(options.limit as i64);
        let response = match self.client.kv_client().get(start, Some(get_options)).await {
            Ok(response) => response,
            Err(e) => {
                return Err(match classify(e) {
                    EtcdFailure::Compacted => self.compacted_error(options.revision).await,
                    EtcdFailure::FutureRevision => self.future_error(options.revision).await,
                    EtcdFailure::Other(text) => Error::Backend(format!("etcd: {text}")),
                });
            }
        };
        let kvs = response
            .kvs()
            .iter()
            .map(convert)
            .collect::<Result<Vec<_>>>()?;
        let revision = if options.revision == 0 {
            header_revision(response.header())?
        } else {
            options.revision
        };
        Ok(ListResult {
            kvs,
            revision,
            more: response.more(),
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let options = GetOptions::new()
            .with_range(range_end(prefix))
            .with_count_only();
        let response = self
            .client
            .kv_client()
            .get(range_start(prefix.as_bytes()), Some(options))
            .await
            .map_err(backend)?;
        Ok(response.count().max(0) as u64)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let response = self.client.kv_client().txn(txn).await.map_err(backend)?;
        if !response.succeeded() {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        header_revision(response.header())
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        // `create_revision > 0` keeps `expected == 0` from creating a missing key.
        let txn = Txn::new()
            .when([
                Compare::create_revision(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self.client.kv_client().txn(txn).await.map_err(backend)?;
        if !response.succeeded() {
            return Err(Error::Conflict {
                key: key.to_string(),
                expected,
                current: else_value(&response)?.map(Box::new),
            });
        }
        header_revision(response.header())
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let mut compares = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            compares.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                key,
                Some(etcd_client::DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self.client.kv_client().txn(txn).await.map_err(backend)?;
        if !response.succeeded() {
            return match (else_value(&response)?, expected) {
                (None, _) => Err(Error::NotFound(key.to_string())),
                (Some(current), Some(expected)) => Err(Error::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Some(Box::new(current)),
                }),
                (Some(_), None) => Err(Error::Backend(format!(
                    "etcd refused to delete {key} although it exists; retry"
                ))),
            };
        }
        let revision = header_revision(response.header())?;
        for op in response.op_responses() {
            if let TxnOpResponse::Delete(delete) = op
                && let Some(prev) = delete.prev_kvs().first()
            {
                return Ok((revision, convert(prev)?));
            }
        }
        Err(Error::Backend(format!(
            "etcd deleted {key} but did not return its previous value"
        )))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // etcd reports a compacted start only after the watch is created, and
        // asynchronously; a read at `after` tells it up front.
        if after > 0 && !self.readable_at(after).await? {
            return Err(self.compacted_error(after).await);
        }
        let mut options = WatchOptions::new()
            .with_range(range_end(prefix))
            .with_prev_key();
        if after > 0 {
            options = options.with_start_revision(after + 1);
        }
        let mut stream = self
            .client
            .watch_client()
            .watch(range_start(prefix.as_bytes()), Some(options))
            .await
            .map_err(backend)?;
        // Wait until etcd confirms the watch, so that every write made after this
        // call returns is reported.
        let mut pending = VecDeque::new();
        loop {
            let Some(response) = stream.message().await.map_err(backend)? else {
                return Err(Error::Backend(
                    "etcd closed the watch before confirming it; retry".to_string(),
                ));
            };
            pending.extend(watch_events(&response, after)?);
            if response.created() || !pending.is_empty() {
                break;
            }
        }
        let state = (stream, pending);
        Ok(Box::pin(futures::stream::unfold(
            Some(state),
            move |state| async move {
                let (mut stream, mut pending) = state?;
                loop {
                    if let Some(event) = pending.pop_front() {
                        return Some((Ok(event), Some((stream, pending))));
                    }
                    match stream.message().await {
                        Ok(Some(response)) => match watch_events(&response, after) {
                            Ok(events) => pending.extend(events),
                            Err(e) => return Some((Err(e), None)),
                        },
                        Ok(None) => {
                            let e = Error::Backend(
                                "etcd closed the watch stream; watch again".to_string(),
                            );
                            return Some((Err(e), None));
                        }
                        Err(e) => return Some((Err(backend(e)), None)),
                    }
                }
            },
        )))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let options = CompactionOptions::new().with_physical();
        match self
            .client
            .kv_client()
            .compact(revision, Some(options))
            .await
        {
            Ok(_) => {
                self.compacted.fetch_max(revision, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => match classify(e) {
                // Already compacted at or beyond `revision`: nothing to do.
                EtcdFailure::Compacted => Ok(()),
                EtcdFailure::FutureRevision => Err(self.future_error(revision).await),
                EtcdFailure::Other(text) => Err(Error::Backend(format!("etcd: {text}"))),
            },
        }
    }

    /// etcd has no call for its compacted revision, but a read below it fails. The
    /// remembered lower bound is checked first (one read when it is exact), then the
    /// oldest readable revision is found by bisection.
    async fn compacted_revision(&self) -> Result<Revision> {
        let known = self.compacted.load(Ordering::SeqCst);
        let mut low = known.max(1);
        if self.readable_at(low).await? {
            return Ok(known);
        }
        // `low` is compacted away; the current revision never is.
        let mut high = self.current_revision().await?;
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if self.readable_at(middle).await? {
                high = middle;
            } else {
                low = middle;
            }
        }
        self.compacted.fetch_max(high, Ordering::SeqCst);
        Ok(high)
    }
}
