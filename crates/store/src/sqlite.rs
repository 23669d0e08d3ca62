//! The embedded default datastore: one SQLite file (WAL mode) per cluster.
//!
//! Layout:
//! - `current` holds the latest value of every live key, so reads at the latest
//!   revision never look at history;
//! - `log` holds one row per write (revision, key, put/delete, value, the revision of
//!   the key's previous row), for watches and reads at older revisions;
//! - `meta` holds the current and the compacted revision. Both are also kept in
//!   memory, so "what is the latest revision" is O(1) and never a `MAX()` over `log`.
//!
//! Writes go through one writer thread. It takes every request waiting in its
//! channel, applies them all in ONE transaction (group commit), commits, then
//! publishes the events to watchers and answers each caller. A caller is answered
//! only after its transaction committed, so an acknowledged write survives a crash.
//! Reads use a small pool of separate connections and never wait for the writer.
//!
//! Compaction deletes the log rows that no read or watch at or after the compacted
//! revision can need: every row superseded by a newer row of the same key at or
//! before that revision, and every deletion (tombstone) at or before it. Freed pages
//! are reused by later writes, so the file stays flat under churn; the WAL is
//! truncated after each compaction and capped by `journal_size_limit`.
//!
//! Watches subscribe to the writer's in-process broadcast first, then replay the
//! log after the requested revision, then follow live events, skipping revisions
//! already replayed. A watcher that falls more than `WATCH_BUFFER` commits behind
//! gets an error and its stream ends; it must watch again from its last revision.
//!
//! Next to the database, `<file>.lock` holds an exclusive lock while the store is
//! open, so a second process can not write the same file with its own revisions.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Semaphore, broadcast, oneshot};

use crate::{
    Error, Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream,
    prefix_end,
};

/// Most write requests committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Read connections kept open.
const READERS: usize = 4;
/// Committed batches a watcher may fall behind before its stream fails.
const WATCH_BUFFER: usize = 1024;
/// Size the WAL file is truncated back to after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 8 * 1024 * 1024;
/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the checkpoint after a compaction waits for readers (writes wait too).
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// `log.kind` of a put.
const KIND_PUT: i64 = 0;
/// `log.kind` of a delete.
const KIND_DELETE: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
CREATE TABLE IF NOT EXISTS current (
    key             BLOB PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    mod_revision    INTEGER NOT NULL,
    value           BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    revision        INTEGER PRIMARY KEY,
    key             BLOB NOT NULL,
    kind            INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    value           BLOB,
    prev_revision   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
";

/// The SQLite store. See the module docs for the design.
pub struct SqliteStore {
    shared: Arc<Shared>,
    writer: Option<mpsc::Sender<Request>>,
    writer_thread: Option<JoinHandle<()>>,
    readers: ReadPool,
    /// An exclusive lock on `<db>.lock`, so that two processes never write one file
    /// with two revision counters. Released last, on drop.
    _lock: File,
}

/// What the writer thread and the store's handles share.
struct Shared {
    revision: AtomicI64,
    compacted: AtomicI64,
    /// One message per committed transaction, holding its events in revision order.
    events: broadcast::Sender<Arc<[Event]>>,
}

enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

enum Done {
    Written(Revision),
    Deleted(Revision, KeyValue),
    Compacted,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Done>>,
}

fn db_err(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| Error::Backend(format!("sqlite: {context}: {e}"))
}

fn writer_stopped() -> Error {
    Error::Backend(
        "the SQLite writer thread has stopped (see the earlier error in the log); \
         restart the process"
            .to_string(),
    )
}

fn key_string(bytes: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

impl SqliteStore {
    /// Opens (creating when missing) the store in the SQLite file at `path`.
    ///
    /// Fails when another process has the same file open.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                Error::Backend(format!(
                    "can not open {}: {e}; check that the directory exists and is writable",
                    lock_path.display()
                ))
            })?;
        lock.try_lock().map_err(|e| {
            Error::Backend(format!(
                "the datastore {} is in use by another process ({e}); stop it first",
                path.display()
            ))
        })?;

        let mut conn = Connection::open(path).map_err(|e| {
            Error::Backend(format!(
                "can not open SQLite file {}: {e}; check the path and its permissions",
                path.display()
            ))
        })?;
        configure_writer(&conn)?;
        conn.execute_batch(SCHEMA)
            .map_err(db_err("creating the schema"))?;
        let (revision, compacted) = {
            let tx = conn.transaction().map_err(db_err("reading meta"))?;
            let meta = read_meta(&tx)?;
            tx.commit().map_err(db_err("reading meta"))?;
            meta
        };

        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let shared = Arc::new(Shared {
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            events,
        });
        let readers = ReadPool::new(path.to_path_buf())?;
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let writer_thread = std::thread::Builder::new()
            .name("sqlite-writer".to_string())
            .spawn(move || Writer::new(conn, writer_shared).run(rx))
            .map_err(|e| Error::Backend(format!("can not start the SQLite writer thread: {e}")))?;
        Ok(SqliteStore {
            shared,
            writer: Some(tx),
            writer_thread: Some(writer_thread),
            readers,
            _lock: lock,
        })
    }

    async fn submit(&self, op: Op) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .as_ref()
            .ok_or_else(writer_stopped)?
            .send(Request { op, reply })
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once the queued requests are done;
        // waiting for it means the file is closed (and the lock free) on return.
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

fn configure_writer(conn: &Connection) -> Result<()> {
    // synchronous=NORMAL in WAL mode: a commit is written to the WAL (so it survives
    // the process being killed at any moment, which `tests/sqlite_durability.rs`
    // checks with kill -9) but not fsynced; the WAL is fsynced at checkpoints. The
    // trade-off: a power loss or kernel crash can lose the last commits (never
    // corrupt the file). FULL (one fsync per group commit) measured 3-8x slower
    // with 16 concurrent writers on the development VM (about 5k against 38k
    // creates/s), so the process-crash guarantee of the store contract is kept
    // and power-loss durability is left to the machine (battery-backed storage).
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err("enabling WAL mode"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_err("setting synchronous"))?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(db_err("setting journal_size_limit"))?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(db_err("setting temp_store"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err("setting busy_timeout"))?;
    Ok(())
}

/// Reads (revision, compacted) from `meta`.
fn read_meta(conn: &Connection) -> Result<(Revision, Revision)> {
    let mut stmt = conn
        .prepare_cached("SELECT name, value FROM meta WHERE name IN ('revision', 'compacted')")
        .map_err(db_err("reading meta"))?;
    let mut revision = 0;
    let mut compacted = 0;
    let rows = stmt
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(db_err("reading meta"))?;
    for row in rows {
        let (name, value) = row.map_err(db_err("reading meta"))?;
        match name.as_str() {
            "revision" => revision = value,
            _ => compacted = value,
        }
    }
    Ok((revision, compacted))
}

/// The single writer: applies batches of requests in one transaction each.
struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
}

/// The effect of a batch before it is committed.
struct Pending {
    revision: Revision,
    compacted: Revision,
    events: Vec<Event>,
}

impl Writer {
    fn new(conn: Connection, shared: Arc<Shared>) -> Self {
        Writer { conn, shared }
    }

    fn run(mut self, requests: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Ok(first) = requests.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
        }
    }

    /// Applies and commits `batch`, then answers every request in it.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        let mut pending = Pending {
            revision: self.shared.revision.load(Ordering::SeqCst),
            compacted: self.shared.compacted.load(Ordering::SeqCst),
            events: Vec::new(),
        };
        let before = (pending.revision, pending.compacted);
        let outcome = (|| -> Result<Vec<Result<Done>>> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err("starting a write transaction"))?;
            let mut answers = Vec::with_capacity(batch.len());
            for request in batch.iter() {
                let answer = apply(&tx, &request.op, &mut pending);
                if let Err(Error::Backend(message)) = answer {
                    // The transaction is dropped (rolled back) and the whole batch
                    // fails: a database error leaves no partial write behind.
                    return Err(Error::Backend(message));
                }
                answers.push(answer);
            }
            if (pending.revision, pending.compacted) != before {
                tx.execute(
                    "UPDATE meta SET value = CASE name WHEN 'revision' THEN ?1 ELSE ?2 END \
                     WHERE name IN ('revision', 'compacted')",
                    params![pending.revision, pending.compacted],
                )
                .map_err(db_err("updating meta"))?;
            }
            tx.commit().map_err(db_err("committing"))?;
            Ok(answers)
        })();
        match outcome {
            Ok(answers) => {
                self.shared
                    .revision
                    .store(pending.revision, Ordering::SeqCst);
                self.shared
                    .compacted
                    .store(pending.compacted, Ordering::SeqCst);
                if !pending.events.is_empty() {
                    let _ = self.shared.events.send(pending.events.into());
                }
                // Before answering, so that a compaction has freed the WAL's space
                // as well when it returns. Compactions are rare; the delay is small.
                if pending.compacted != before.1 {
                    self.checkpoint();
                }
                for (request, answer) in batch.drain(..).zip(answers) {
                    let _ = request.reply.send(answer);
                }
            }
            Err(error) => {
                tracing::error!(%error, "SQLite write transaction failed");
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(Error::Backend(error.to_string())));
                }
            }
        }
    }

    /// Moves the WAL into the database file and truncates it, so that compaction
    /// frees space in the WAL as well. Waits only briefly for active readers: when
    /// they keep it from finishing, the next compaction tries again.
    fn checkpoint(&self) {
        let _ = self.conn.busy_timeout(CHECKPOINT_BUSY_TIMEOUT);
        let result = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            });
        let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
        match result {
            Ok(0) => {}
            Ok(_) => tracing::debug!("WAL checkpoint could not finish; readers were active"),
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
        }
    }
}

/// The current row of `key`, read inside the write transaction.
fn current(conn: &Connection, key: &str) -> Result<Option<KeyValue>> {
    conn.prepare_cached("SELECT create_revision, mod_revision, value FROM current WHERE key = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([key.as_bytes()], |row| {
                Ok(KeyValue {
                    key: key.to_string(),
                    create_revision: row.get(0)?,
                    mod_revision: row.get(1)?,
                    value: Bytes::from(row.get::<_, Vec<u8>>(2)?),
                })
            })
            .optional()
        })
        .map_err(db_err("reading a key"))
}

fn insert_log(
    conn: &Connection,
    revision: Revision,
    key: &str,
    kind: i64,
    create_revision: Revision,
    value: Option<&[u8]>,
    prev_revision: Revision,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO log (revision, key, kind, create_revision, value, prev_revision) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            revision,
            key.as_bytes(),
            kind,
            create_revision,
            value,
            prev_revision
        ])
    })
    .map(|_| ())
    .map_err(db_err("appending to the log"))
}

/// Applies one request inside the batch's transaction. Logical failures (conflicts)
/// write nothing; `Error::Backend` aborts the batch.
fn apply(conn: &Connection, op: &Op, pending: &mut Pending) -> Result<Done> {
    match op {
        Op::Create { key, value } => {
            if current(conn, key)?.is_some() {
                return Err(Error::AlreadyExists(key.clone()));
            }
            let revision = pending.revision + 1;
            conn.prepare_cached(
                "INSERT INTO current (key, create_revision, mod_revision, value) \
                 VALUES (?1, ?2, ?2, ?3)",
            )
            .and_then(|mut stmt| stmt.execute(params![key.as_bytes(), revision, &value[..]]))
            .map_err(db_err("inserting a key"))?;
            insert_log(conn, revision, key, KIND_PUT, revision, Some(value), 0)?;
            pending.revision = revision;
            pending.events.push(Event::Put {
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: revision,
                    mod_revision: revision,
                },
                prev: None,
            });
            Ok(Done::Written(revision))
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let prev = match current(conn, key)? {
                Some(kv) if kv.mod_revision == *expected => kv,
                current => {
                    return Err(Error::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        current: current.map(Box::new),
                    });
                }
            };
            let revision = pending.revision + 1;
            conn.prepare_cached("UPDATE current SET mod_revision = ?2, value = ?3 WHERE key = ?1")
                .and_then(|mut stmt| stmt.execute(params![key.as_bytes(), revision, &value[..]]))
                .map_err(db_err("updating a key"))?;
            insert_log(
                conn,
                revision,
                key,
                KIND_PUT,
                prev.create_revision,
                Some(value),
                prev.mod_revision,
            )?;
            pending.revision = revision;
            pending.events.push(Event::Put {
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                },
                prev: Some(prev),
            });
            Ok(Done::Written(revision))
        }
        Op::Delete { key, expected } => {
            let Some(prev) = current(conn, key)? else {
                return Err(Error::NotFound(key.clone()));
            };
            if let Some(expected) = *expected
                && prev.mod_revision != expected
            {
                return Err(Error::Conflict {
                    key: key.clone(),
                    expected,
                    current: Some(Box::new(prev)),
                });
            }
            let revision = pending.revision + 1;
            conn.prepare_cached("DELETE FROM current WHERE key = ?1")
                .and_then(|mut stmt| stmt.execute([key.as_bytes()]))
                .map_err(db_err("deleting a key"))?;
            insert_log(
                conn,
                revision,
                key,
                KIND_DELETE,
                prev.create_revision,
                None,
                prev.mod_revision,
            )?;
            pending.revision = revision;
            pending.events.push(Event::Delete {
                prev: prev.clone(),
                revision,
            });
            Ok(Done::Deleted(revision, prev))
        }
        Op::Compact { revision } => {
            let revision = *revision;
            if revision > pending.revision {
                return Err(Error::FutureRevision {
                    requested: revision,
                    current: pending.revision,
                });
            }
            if revision <= pending.compacted {
                return Ok(Done::Compacted);
            }
            // Rows up to the old compacted revision are already minimal, so only the
            // rows written since can supersede anything. A row's previous row (its
            // `prev_revision`) is superseded by it; a deletion at or before
            // `revision` leaves nothing to read at `revision` or later.
            conn.execute(
                "DELETE FROM log WHERE revision IN (SELECT prev_revision FROM log \
                 WHERE revision > ?1 AND revision <= ?2 AND prev_revision > 0)",
                params![pending.compacted, revision],
            )
            .map_err(db_err("compacting superseded rows"))?;
            conn.execute(
                "DELETE FROM log WHERE revision > ?1 AND revision <= ?2 AND kind = ?3",
                params![pending.compacted, revision, KIND_DELETE],
            )
            .map_err(db_err("compacting deletions"))?;
            pending.compacted = revision;
            Ok(Done::Compacted)
        }
    }
}

/// A few read-only connections, used from blocking threads.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err("opening a read connection"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err("setting busy_timeout"))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(db_err("setting query_only"))?;
    Ok(conn)
}

impl ReadPool {
    fn new(path: PathBuf) -> Result<Self> {
        let idle = (0..READERS)
            .map(|_| open_reader(&path))
            .collect::<Result<Vec<_>>>()?;
        Ok(ReadPool {
            path,
            idle: Mutex::new(idle),
            permits: Semaphore::new(READERS),
        })
    }

    /// Runs `read` in one read transaction (a consistent snapshot) on a pooled
    /// connection, on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Backend("the SQLite read pool is closed".to_string()))?;
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        // A connection is missing only when an earlier caller was cancelled while
        // its read ran; open a replacement.
        let mut conn = match conn {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = (|| {
                let tx = conn.transaction().map_err(db_err("starting a read"))?;
                let value = read(&tx)?;
                tx.finish().map_err(db_err("ending a read"))?;
                Ok(value)
            })();
            (conn, result)
        })
        .await
        .map_err(|e| Error::Backend(format!("a SQLite read panicked: {e}")))?;
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        result
    }
}

/// The lower bound of a listing and whether it is inclusive: `prefix` itself, or
/// `start_after` (exclusive) when that is not before it.
fn lower_bound(prefix: &str, start_after: Option<&str>) -> (Vec<u8>, bool) {
    match start_after {
        Some(after) if after >= prefix => (after.as_bytes().to_vec(), false),
        _ => (prefix.as_bytes().to_vec(), true),
    }
}

fn kv_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: key_string(row.get(0)?)?,
        create_revision: row.get(1)?,
        mod_revision: row.get(2)?,
        value: Bytes::from(row.get::<_, Vec<u8>>(3)?),
    })
}

fn list_in(
    tx: &rusqlite::Transaction<'_>,
    prefix: &str,
    options: &ListOptions,
) -> Result<ListResult> {
    let (revision_now, compacted) = read_meta(tx)?;
    let revision = if options.revision == 0 {
        revision_now
    } else {
        options.revision
    };
    if revision < compacted {
        return Err(Error::Compacted {
            requested: revision,
            compacted,
        });
    }
    if revision > revision_now {
        return Err(Error::FutureRevision {
            requested: revision,
            current: revision_now,
        });
    }
    let (start, inclusive) = lower_bound(prefix, options.start_after.as_deref());
    let end = prefix_end(prefix);
    let start_op = if inclusive { ">=" } else { ">" };
    let end_sql = if end.is_some() { "< ?2" } else { "IS NOT ?2" };
    let limit: i64 = if options.limit == 0 {
        -1
    } else {
        options.limit as i64 + 1
    };
    let sql = if revision == revision_now {
        format!(
            "SELECT key, create_revision, mod_revision, value FROM current \
             WHERE key {start_op} ?1 AND key {end_sql} ORDER BY key LIMIT ?3"
        )
    } else {
        // The newest row of each key at or before `revision`, when it is a put.
        format!(
            "SELECT l.key, l.create_revision, l.revision, l.value FROM \
             (SELECT key, MAX(revision) AS revision FROM log \
              WHERE key {start_op} ?1 AND key {end_sql} AND revision <= ?4 GROUP BY key) AS m \
             JOIN log AS l ON l.revision = m.revision \
             WHERE l.kind = {KIND_PUT} ORDER BY m.key LIMIT ?3"
        )
    };
    let mut stmt = tx.prepare_cached(&sql).map_err(db_err("listing"))?;
    let mut kvs = if revision == revision_now {
        stmt.query_map(params![start, end, limit], kv_from_row)
    } else {
        stmt.query_map(params![start, end, limit, revision], kv_from_row)
    }
    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
    .map_err(db_err("listing"))?;
    let more = options.limit != 0 && kvs.len() > options.limit;
    kvs.truncate(if options.limit == 0 {
        usize::MAX
    } else {
        options.limit
    });
    Ok(ListResult {
        kvs,
        revision,
        more,
    })
}

/// Events for keys under `prefix` with revisions greater than `after`, from the log,
/// and the revision of the snapshot they were read at.
fn replay_in(
    tx: &rusqlite::Transaction<'_>,
    prefix: &str,
    after: Revision,
) -> Result<(Vec<Event>, Revision)> {
    let (revision_now, compacted) = read_meta(tx)?;
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    let end = prefix_end(prefix);
    let end_sql = if end.is_some() { "< ?3" } else { "IS NOT ?3" };
    let sql = format!(
        "SELECT l.revision, l.key, l.kind, l.create_revision, l.value, l.prev_revision, \
                p.create_revision, p.value \
         FROM log AS l LEFT JOIN log AS p ON p.revision = l.prev_revision \
         WHERE l.revision > ?1 AND l.key >= ?2 AND l.key {end_sql} ORDER BY l.revision"
    );
    let mut stmt = tx
        .prepare_cached(&sql)
        .map_err(db_err("replaying the log"))?;
    let events = stmt
        .query_map(params![after, prefix.as_bytes(), end], |row| {
            let revision: Revision = row.get(0)?;
            let key = key_string(row.get(1)?)?;
            let kind: i64 = row.get(2)?;
            let create_revision: Revision = row.get(3)?;
            let prev_revision: Revision = row.get(5)?;
            let prev_create: Option<Revision> = row.get(6)?;
            let prev_value: Option<Vec<u8>> = row.get(7)?;
            let prev = (prev_revision > 0).then(|| KeyValue {
                key: key.clone(),
                value: prev_value.map(Bytes::from).unwrap_or_default(),
                create_revision: prev_create.unwrap_or(create_revision),
                mod_revision: prev_revision,
            });
            Ok(if kind == KIND_DELETE {
                Event::Delete {
                    prev: prev.unwrap_or_else(|| KeyValue {
                        key,
                        value: Bytes::new(),
                        create_revision,
                        mod_revision: prev_revision,
                    }),
                    revision,
                }
            } else {
                Event::Put {
                    kv: KeyValue {
                        key,
                        value: Bytes::from(row.get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default()),
                        create_revision,
                        mod_revision: revision,
                    },
                    prev,
                }
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err("replaying the log"))?;
    Ok((events, revision_now))
}

/// The state of one watch stream.
struct Watch {
    replay: VecDeque<Event>,
    live: broadcast::Receiver<Arc<[Event]>>,
    pending: VecDeque<Event>,
    /// Live events at or below this revision were already replayed (or predate
    /// the watch) and are skipped.
    floor: Revision,
    prefix: String,
}

impl Watch {
    /// The next event, `Err` once if the watcher fell behind, `None` at the end.
    async fn next(&mut self) -> Option<Result<Event>> {
        if let Some(event) = self.replay.pop_front() {
            return Some(Ok(event));
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            match self.live.recv().await {
                Ok(batch) => self.pending.extend(
                    batch
                        .iter()
                        .filter(|e| e.revision() > self.floor && e.key().starts_with(&self.prefix))
                        .cloned(),
                ),
                Err(broadcast::error::RecvError::Closed) => return None,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Some(Err(Error::Backend(format!(
                        "watch on {:?} fell behind by {n} commits and was stopped; \
                         watch again from the last revision received",
                        self.prefix
                    ))));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.revision.load(Ordering::SeqCst))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.readers.read(move |tx| current(tx, &key)).await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_string();
        self.readers
            .read(move |tx| list_in(tx, &prefix, &options))
            .await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_string();
        self.readers
            .read(move |tx| {
                let end = prefix_end(&prefix);
                let sql = if end.is_some() {
                    "SELECT COUNT(*) FROM current WHERE key >= ?1 AND key < ?2"
                } else {
                    "SELECT COUNT(*) FROM current WHERE key >= ?1 AND key IS NOT ?2"
                };
                tx.prepare_cached(sql)
                    .and_then(|mut stmt| {
                        stmt.query_row(params![prefix.as_bytes(), end], |row| row.get::<_, i64>(0))
                    })
                    .map(|n| n as u64)
                    .map_err(db_err("counting"))
            })
            .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        match self
            .submit(Op::Create {
                key: key.to_string(),
                value,
            })
            .await?
        {
            Done::Written(revision) => Ok(revision),
            _ => unreachable!("a create answers with its revision"),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        match self
            .submit(Op::Update {
                key: key.to_string(),
                value,
                expected,
            })
            .await?
        {
            Done::Written(revision) => Ok(revision),
            _ => unreachable!("an update answers with its revision"),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        match self
            .submit(Op::Delete {
                key: key.to_string(),
                expected,
            })
            .await?
        {
            Done::Deleted(revision, prev) => Ok((revision, prev)),
            _ => unreachable!("a delete answers with the deleted value"),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe before reading, so that nothing committed after the read is
        // missed; events both read and received are skipped by revision.
        let live = self.shared.events.subscribe();
        let (replay, floor) = if after == 0 {
            (Vec::new(), self.shared.revision.load(Ordering::SeqCst))
        } else {
            let owned = prefix.to_string();
            let (events, snapshot) = self
                .readers
                .read(move |tx| replay_in(tx, &owned, after))
                .await?;
            (events, snapshot.max(after))
        };
        let watch = Watch {
            replay: replay.into(),
            live,
            pending: VecDeque::new(),
            floor,
            prefix: prefix.to_string(),
        };
        Ok(Box::pin(futures::stream::unfold(
            Some(watch),
            |state| async move {
                let mut watch = state?;
                match watch.next().await? {
                    Ok(event) => Some((Ok(event), Some(watch))),
                    Err(error) => Some((Err(error), None)),
                }
            },
        )))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.submit(Op::Compact { revision }).await? {
            Done::Compacted => Ok(()),
            _ => unreachable!("a compaction answers with Compacted"),
        }
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.compacted.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn temp_db() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let path = dir.path().join("state.db");
        (dir, path)
    }

    #[tokio::test]
    async fn reopening_keeps_revisions_history_and_compaction() {
        let (_dir, path) = temp_db();
        let (r1, r3) = {
            let store = SqliteStore::open(&path).unwrap();
            let r1 = store
                .create("/k/a", Bytes::from_static(b"1"))
                .await
                .unwrap();
            store
                .create("/k/b", Bytes::from_static(b"2"))
                .await
                .unwrap();
            let (r3, _) = store.delete("/k/b", None).await.unwrap();
            store.compact(r1).await.unwrap();
            (r1, r3)
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), r3);
        assert_eq!(store.compacted_revision().await.unwrap(), r1);
        let old = store.list(
            "/k/",
            ListOptions {
                revision: r3 - 1,
                ..Default::default()
            },
        );
        assert_eq!(old.await.unwrap().kvs.len(), 2);
        assert_eq!(store.create("/k/c", Bytes::new()).await.unwrap(), r3 + 1);
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_is_refused() {
        let (_dir, path) = temp_db();
        let _first = SqliteStore::open(&path).unwrap();
        let err = SqliteStore::open(&path)
            .err()
            .expect("the second open must fail");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_gets_an_error_then_the_end() {
        let (_dir, path) = temp_db();
        let store = SqliteStore::open(&path).unwrap();
        let mut watch = store.watch("/lag/", 0).await.unwrap();
        // One commit per create: sequential writes are never batched together.
        for i in 0..WATCH_BUFFER + 10 {
            store
                .create(&format!("/lag/{i}"), Bytes::new())
                .await
                .unwrap();
        }
        let mut delivered = 0;
        loop {
            match watch.next().await {
                Some(Ok(_)) => delivered += 1,
                Some(Err(e)) => {
                    assert!(e.to_string().contains("fell behind"), "{e}");
                    break;
                }
                None => panic!("the stream ended without reporting the lost events"),
            }
        }
        assert!(delivered < WATCH_BUFFER + 10);
        assert!(
            watch.next().await.is_none(),
            "the stream ends after the error"
        );
    }

    #[tokio::test]
    async fn compaction_deletes_superseded_rows_only() {
        let (_dir, path) = temp_db();
        let store = SqliteStore::open(&path).unwrap();
        let mut rev = store
            .create("/k/a", Bytes::from_static(b"0"))
            .await
            .unwrap();
        for i in 1..10u8 {
            rev = store
                .update("/k/a", Bytes::from(vec![i]), rev)
                .await
                .unwrap();
        }
        store.create("/k/gone", Bytes::new()).await.unwrap();
        store.delete("/k/gone", None).await.unwrap();
        let current = store.current_revision().await.unwrap();
        store.compact(current).await.unwrap();
        let rows: i64 = store
            .readers
            .read(|tx| {
                tx.query_row("SELECT COUNT(*) FROM log", [], |row| row.get(0))
                    .map_err(db_err("counting"))
            })
            .await
            .unwrap();
        assert_eq!(rows, 1, "only the latest row of the live key is left");
    }
}
