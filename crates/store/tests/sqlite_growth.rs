//! The SQLite file stays flat under churn when the store is compacted.
//!
//! Simulates lease renewals: 100 keys each updated 300 times, in rounds, with the
//! API server's habit of compacting regularly and keeping the last ~1000
//! revisions. The database plus WAL must stay under a fixed bound, far below the
//! size the same churn reaches without compaction (measured in the same test).

use std::path::Path;

use bytes::Bytes;
use futures::future::join_all;
use krust_store::sqlite::SqliteStore;
use krust_store::{ListOptions, Store};

const KEYS: usize = 100;
const ROUNDS: usize = 300;
/// Compact every this many rounds...
const COMPACT_EVERY: usize = 5;
/// ...keeping this many revisions of history.
const KEEP_REVISIONS: i64 = 1000;
/// About the size of a Lease object.
const VALUE_SIZE: usize = 1024;
/// The bound the compacted store must stay under (database + WAL) at any time: the
/// kept history (~1500 revisions between compactions, ~3 MB) plus a WAL of up to
/// SQLite's 1000-page autocheckpoint (~4 MB).
const BOUND: u64 = 8 * 1024 * 1024;
/// Right after a compaction the WAL is truncated, so only the database counts.
const BOUND_AFTER_COMPACTION: u64 = 4 * 1024 * 1024;

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Size of the database and its WAL.
fn disk_size(db: &Path) -> u64 {
    let wal = Path::new(&format!("{}-wal", db.display())).to_path_buf();
    file_size(db) + file_size(&wal)
}

/// Runs the churn; returns the largest size seen after any round and the final one.
async fn churn(db: &Path, compact: bool) -> (u64, u64) {
    let store = SqliteStore::open(db).expect("open the store");
    let value = |round: usize| Bytes::from(vec![b'a' + (round % 26) as u8; VALUE_SIZE]);
    let mut revisions = Vec::with_capacity(KEYS);
    for k in 0..KEYS {
        revisions.push(
            store
                .create(&format!("/leases/{k}"), value(0))
                .await
                .unwrap(),
        );
    }
    let mut largest = 0;
    for round in 1..=ROUNDS {
        // All keys of a round are renewed concurrently, as by many kubelets.
        let updates = (0..KEYS).map(|k| {
            let key = format!("/leases/{k}");
            let store = &store;
            let expected = revisions[k];
            async move { store.update(&key, value(round), expected).await.unwrap() }
        });
        revisions = join_all(updates).await;
        largest = largest.max(disk_size(db));
        if compact && round % COMPACT_EVERY == 0 {
            let current = store.current_revision().await.unwrap();
            if current > KEEP_REVISIONS {
                store.compact(current - KEEP_REVISIONS).await.unwrap();
            }
            largest = largest.max(disk_size(db));
        }
    }
    // The latest state is intact either way.
    let list = store
        .list("/leases/", ListOptions::default())
        .await
        .unwrap();
    assert_eq!(list.kvs.len(), KEYS);
    assert!(list.kvs.iter().all(|kv| kv.value == value(ROUNDS)));
    (largest, disk_size(db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_keeps_the_file_flat_under_churn() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let compacted_db = dir.path().join("compacted.db");
    let growing_db = dir.path().join("growing.db");

    let (largest, last) = churn(&compacted_db, true).await;
    let (_, uncompacted) = churn(&growing_db, false).await;
    println!(
        "{} writes of {VALUE_SIZE} bytes: with compaction at most {largest} bytes \
         (finally {last}); without compaction {uncompacted} bytes",
        KEYS * (ROUNDS + 1)
    );
    assert!(
        largest < BOUND,
        "the compacted store grew to {largest} bytes, over the {BOUND} byte bound"
    );
    assert!(
        last < BOUND_AFTER_COMPACTION,
        "right after the last compaction the store is {last} bytes, over the \
         {BOUND_AFTER_COMPACTION} byte bound"
    );
    assert!(
        uncompacted > 5 * largest,
        "without compaction the store should be far larger ({uncompacted} bytes) \
         than with it ({largest} bytes); is the test still meaningful?"
    );
}
