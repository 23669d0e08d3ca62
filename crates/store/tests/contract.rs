//! The store contract, written once and run against every backend: memory, SQLite
//! (in a temp dir) and etcd (a private `/usr/bin/etcd` started by the test).
//!
//! Each case is a plain async function over `Arc<dyn Store>` and gets a fresh,
//! empty store. Cases never assume the first revision (etcd starts at 1, the others
//! at 0), only how revisions move.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use krust_store::{Error, Event, KeyValue, ListOptions, Revision, Store, WatchStream};

type S = Arc<dyn Store>;

/// How long a watch event may take to arrive before the test fails.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);

fn b(value: &str) -> Bytes {
    Bytes::copy_from_slice(value.as_bytes())
}

fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: b(value),
        create_revision,
        mod_revision,
    }
}

async fn next(stream: &mut WatchStream) -> Event {
    match tokio::time::timeout(EVENT_DEADLINE, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
        Ok(None) => panic!("the watch ended unexpectedly"),
        Err(_) => panic!("no watch event within {EVENT_DEADLINE:?}"),
    }
}

fn at(revision: Revision) -> ListOptions {
    ListOptions {
        revision,
        ..Default::default()
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

async fn create_then_get(s: S) {
    let before = s.current_revision().await.unwrap();
    let rev = s.create("/t/a", b("one")).await.unwrap();
    assert_eq!(rev, before + 1);
    assert_eq!(
        s.get("/t/a").await.unwrap(),
        Some(kv("/t/a", "one", rev, rev))
    );
    assert_eq!(s.get("/t/missing").await.unwrap(), None);
    assert_eq!(s.current_revision().await.unwrap(), rev);
}

async fn create_twice_is_already_exists(s: S) {
    let rev = s.create("/t/a", b("one")).await.unwrap();
    match s.create("/t/a", b("two")).await {
        Err(Error::AlreadyExists(key)) => assert_eq!(key, "/t/a"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        s.get("/t/a").await.unwrap(),
        Some(kv("/t/a", "one", rev, rev))
    );
}

async fn update_checks_the_expected_revision(s: S) {
    let r1 = s.create("/t/a", b("one")).await.unwrap();
    let r2 = s.update("/t/a", b("two"), r1).await.unwrap();
    assert_eq!(r2, r1 + 1);
    assert_eq!(
        s.get("/t/a").await.unwrap(),
        Some(kv("/t/a", "two", r1, r2))
    );

    match s.update("/t/a", b("three"), r1).await {
        Err(Error::Conflict {
            key,
            expected,
            current,
        }) => {
            assert_eq!((key.as_str(), expected), ("/t/a", r1));
            assert_eq!(current.map(|c| *c), Some(kv("/t/a", "two", r1, r2)));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    for expected in [0, r2] {
        match s.update("/t/missing", b("x"), expected).await {
            Err(Error::Conflict { current: None, .. }) => {}
            other => panic!("expected Conflict without a current value, got {other:?}"),
        }
    }
    assert_eq!(s.get("/t/missing").await.unwrap(), None);
    assert_eq!(s.current_revision().await.unwrap(), r2);
}

async fn delete_with_and_without_expected(s: S) {
    let r1 = s.create("/t/a", b("one")).await.unwrap();
    match s.delete("/t/a", Some(r1 + 100)).await {
        Err(Error::Conflict { current, .. }) => {
            assert_eq!(current.map(|c| *c), Some(kv("/t/a", "one", r1, r1)));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let (rd, prev) = s.delete("/t/a", Some(r1)).await.unwrap();
    assert_eq!(rd, r1 + 1);
    assert_eq!(prev, kv("/t/a", "one", r1, r1));
    assert_eq!(s.get("/t/a").await.unwrap(), None);
    for expected in [None, Some(r1), Some(rd)] {
        match s.delete("/t/a", expected).await {
            Err(Error::NotFound(key)) => assert_eq!(key, "/t/a"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    let r3 = s.create("/t/b", b("bee")).await.unwrap();
    let (r4, prev) = s.delete("/t/b", None).await.unwrap();
    assert_eq!((r4, prev), (r3 + 1, kv("/t/b", "bee", r3, r3)));

    // A key created again starts a new life.
    let r5 = s.create("/t/a", b("again")).await.unwrap();
    assert_eq!(
        s.get("/t/a").await.unwrap(),
        Some(kv("/t/a", "again", r5, r5))
    );
}

async fn revisions_grow_by_one_per_write(s: S) {
    let r0 = s.current_revision().await.unwrap();
    assert_eq!(s.create("/r/a", b("1")).await.unwrap(), r0 + 1);
    assert!(s.create("/r/a", b("x")).await.is_err());
    assert_eq!(s.update("/r/a", b("2"), r0 + 1).await.unwrap(), r0 + 2);
    assert!(s.update("/r/a", b("x"), r0 + 1).await.is_err());
    assert_eq!(s.create("/r/b", b("1")).await.unwrap(), r0 + 3);
    assert_eq!(s.delete("/r/a", None).await.unwrap().0, r0 + 4);
    assert!(s.delete("/r/a", None).await.is_err());
    assert_eq!(s.current_revision().await.unwrap(), r0 + 4);
}

async fn list_isolates_prefixes(s: S) {
    for key in ["/a/1", "/a/2", "/ab/1", "/a", "/b/1", "/a/sub/3"] {
        s.create(key, b(key)).await.unwrap();
    }
    let current = s.current_revision().await.unwrap();
    let list = s.list("/a/", ListOptions::default()).await.unwrap();
    assert_eq!(keys(&list.kvs), ["/a/1", "/a/2", "/a/sub/3"]);
    assert_eq!(list.kvs[0].value, b("/a/1"));
    assert!(!list.more);
    assert_eq!(list.revision, current);
    let list = s.list("/ab/", ListOptions::default()).await.unwrap();
    assert_eq!(keys(&list.kvs), ["/ab/1"]);
    assert!(
        s.list("/c/", ListOptions::default())
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    let all = s.list("", ListOptions::default()).await.unwrap();
    assert_eq!(
        keys(&all.kvs),
        ["/a", "/a/1", "/a/2", "/a/sub/3", "/ab/1", "/b/1"]
    );
}

async fn list_pages_at_a_fixed_revision(s: S) {
    let original: Vec<(String, Bytes)> = (0..10)
        .map(|i| (format!("/p/{i:02}"), b(&format!("v{i}"))))
        .collect();
    for (key, value) in &original {
        s.create(key, value.clone()).await.unwrap();
    }
    s.create("/q/unrelated", b("x")).await.unwrap();

    let first = s
        .list(
            "/p/",
            ListOptions {
                limit: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.kvs.len(), 4);
    assert!(first.more);
    let pinned = first.revision;

    // Writes between pages must not show in later pages of the same listing.
    let r00 = first.kvs[0].mod_revision;
    s.update("/p/00", b("changed"), r00).await.unwrap();
    s.delete("/p/05", None).await.unwrap();
    s.create("/p/055", b("new")).await.unwrap();
    s.create("/p/10", b("new")).await.unwrap();

    let mut seen: Vec<(String, Bytes)> = first
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    let mut more = first.more;
    while more {
        let page = s
            .list(
                "/p/",
                ListOptions {
                    revision: pinned,
                    start_after: Some(seen.last().unwrap().0.clone()),
                    limit: 4,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.revision, pinned);
        assert!(
            !page.kvs.is_empty(),
            "a page after more=true must not be empty"
        );
        seen.extend(page.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())));
        more = page.more;
    }
    assert_eq!(seen, original);

    // A limit that exactly reaches the end reports no more.
    let last = s
        .list(
            "/p/",
            ListOptions {
                revision: pinned,
                start_after: Some("/p/05".to_string()),
                limit: 4,
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&last.kvs), ["/p/06", "/p/07", "/p/08", "/p/09"]);
    assert!(!last.more);

    // The latest state has the writes.
    let now = s.list("/p/", ListOptions::default()).await.unwrap();
    let now_keys = keys(&now.kvs);
    assert!(now_keys.contains(&"/p/055") && now_keys.contains(&"/p/10"));
    assert!(!now_keys.contains(&"/p/05"));
    assert_eq!(now.kvs[0].value, b("changed"));
}

async fn list_at_an_older_revision(s: S) {
    let ra = s.create("/o/a", b("a1")).await.unwrap();
    let rb = s.create("/o/b", b("b1")).await.unwrap();
    s.update("/o/a", b("a2"), ra).await.unwrap();
    s.delete("/o/b", None).await.unwrap();
    let rc = s.create("/o/c", b("c1")).await.unwrap();

    let old = s.list("/o/", at(rb)).await.unwrap();
    assert_eq!(old.revision, rb);
    assert_eq!(
        old.kvs,
        [kv("/o/a", "a1", ra, ra), kv("/o/b", "b1", rb, rb)]
    );
    let older = s.list("/o/", at(ra)).await.unwrap();
    assert_eq!(older.kvs, [kv("/o/a", "a1", ra, ra)]);
    let now = s.list("/o/", ListOptions::default()).await.unwrap();
    assert_eq!(now.revision, rc);
    assert_eq!(
        keys(&now.kvs),
        ["/o/a", "/o/c"],
        "latest state after update, delete and create"
    );
    assert_eq!(s.list("/o/", at(rc)).await.unwrap().kvs, now.kvs);
    // Paging works on old revisions too.
    let page = s
        .list(
            "/o/",
            ListOptions {
                revision: rb,
                start_after: None,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!((keys(&page.kvs), page.more), (vec!["/o/a"], true));

    match s.list("/o/", at(rc + 10)).await {
        Err(Error::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (rc + 10, rc));
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

async fn watch_replays_then_follows(s: S) {
    let r1 = s.create("/w/1", b("1")).await.unwrap();
    let r2 = s.create("/w/2", b("2")).await.unwrap();
    let r3 = s.update("/w/1", b("1b"), r1).await.unwrap();

    let mut from_r1 = s.watch("/w/", r1).await.unwrap();
    assert_eq!(
        next(&mut from_r1).await,
        Event::Put {
            kv: kv("/w/2", "2", r2, r2),
            prev: None
        }
    );
    assert_eq!(
        next(&mut from_r1).await,
        Event::Put {
            kv: kv("/w/1", "1b", r1, r3),
            prev: Some(kv("/w/1", "1", r1, r1)),
        }
    );
    let mut from_now = s.watch("/w/", 0).await.unwrap();
    let r4 = s.create("/w/3", b("3")).await.unwrap();
    let live = Event::Put {
        kv: kv("/w/3", "3", r4, r4),
        prev: None,
    };
    assert_eq!(next(&mut from_r1).await, live);
    assert_eq!(
        next(&mut from_now).await,
        live,
        "after=0 only sees new writes"
    );
}

async fn watch_during_writes_has_no_gaps_or_duplicates(s: S) {
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    s.create(&format!("/g/{t}/{i}"), b("x")).await.unwrap();
                }
            })
        })
        .collect();
    // Start watching somewhere in the middle of the storm.
    let deadline = Instant::now() + EVENT_DEADLINE;
    let start = loop {
        let count = s.count("/g/").await.unwrap();
        if count >= 100 || Instant::now() > deadline {
            break (s.current_revision().await.unwrap() - 20).max(1);
        }
        tokio::task::yield_now().await;
    };
    let mut watch = s.watch("/g/", start).await.unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let end = s.current_revision().await.unwrap();
    let mut expected = start + 1;
    while expected <= end {
        let event = next(&mut watch).await;
        assert_eq!(event.revision(), expected, "events must be contiguous");
        expected += 1;
    }
}

async fn watch_sees_only_its_prefix(s: S) {
    let r0 = s.create("/before", b("so that r0 > 0")).await.unwrap();
    let mut watch = s.watch("/x/", 0).await.unwrap();
    s.create("/xy/1", b("no")).await.unwrap();
    s.create("/y/1", b("no")).await.unwrap();
    s.create("/x", b("no")).await.unwrap();
    let r = s.create("/x/1", b("yes")).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        Event::Put {
            kv: kv("/x/1", "yes", r, r),
            prev: None
        }
    );
    // The same holds when replaying history.
    let mut replay = s.watch("/x/", r0).await.unwrap();
    assert_eq!(next(&mut replay).await.key(), "/x/1");
}

async fn delete_events_carry_the_previous_value(s: S) {
    s.create("/d0", b("first write, so that watching from it replays"))
        .await
        .unwrap();
    let r0 = s.current_revision().await.unwrap();
    let mut live = s.watch("/d/", r0).await.unwrap();
    let r1 = s.create("/d/k", b("v1")).await.unwrap();
    let r2 = s.update("/d/k", b("v2"), r1).await.unwrap();
    let (r3, _) = s.delete("/d/k", Some(r2)).await.unwrap();
    let expected = [
        Event::Put {
            kv: kv("/d/k", "v1", r1, r1),
            prev: None,
        },
        Event::Put {
            kv: kv("/d/k", "v2", r1, r2),
            prev: Some(kv("/d/k", "v1", r1, r1)),
        },
        Event::Delete {
            prev: kv("/d/k", "v2", r1, r2),
            revision: r3,
        },
    ];
    for event in &expected {
        assert_eq!(&next(&mut live).await, event);
    }
    let mut replay = s.watch("/d/", r0).await.unwrap();
    for event in &expected {
        assert_eq!(&next(&mut replay).await, event, "replayed from history");
    }
}

async fn compaction_forgets_old_revisions(s: S) {
    let r1 = s.create("/c/a", b("a1")).await.unwrap();
    let r2 = s.update("/c/a", b("a2"), r1).await.unwrap();
    let r3 = s.create("/c/b", b("b1")).await.unwrap();
    let (r4, _) = s.delete("/c/b", None).await.unwrap();
    let r5 = s.update("/c/a", b("a3"), r2).await.unwrap();
    let r6 = s.create("/c/c", b("c1")).await.unwrap();

    s.compact(r4).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), r4);

    match s.list("/c/", at(r3)).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (r3, r4)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert_eq!(
        s.list("/c/", at(r4)).await.unwrap().kvs,
        [kv("/c/a", "a2", r1, r2)]
    );
    assert_eq!(
        s.list("/c/", at(r5)).await.unwrap().kvs,
        [kv("/c/a", "a3", r1, r5)]
    );
    assert_eq!(
        s.list("/c/", ListOptions::default()).await.unwrap().kvs,
        [kv("/c/a", "a3", r1, r5), kv("/c/c", "c1", r6, r6)]
    );

    for after in [r1, r3] {
        match s.watch("/c/", after).await {
            Err(Error::Compacted { compacted, .. }) => assert_eq!(compacted, r4),
            Err(other) => panic!("expected Compacted, got {other:?}"),
            Ok(_) => panic!("watching from compacted revision {after} must fail"),
        }
    }
    let mut watch = s.watch("/c/", r4).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        Event::Put {
            kv: kv("/c/a", "a3", r1, r5),
            prev: Some(kv("/c/a", "a2", r1, r2)),
        }
    );
    assert_eq!(next(&mut watch).await.revision(), r6);

    // Compacting backwards does nothing; compacting the future is refused.
    s.compact(r2).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), r4);
    match s.compact(r6 + 100).await {
        Err(Error::FutureRevision { requested, .. }) => assert_eq!(requested, r6 + 100),
        other => panic!("expected FutureRevision, got {other:?}"),
    }
    // Compacting at the current revision keeps every latest value.
    s.compact(r6).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), r6);
    assert_eq!(s.get("/c/a").await.unwrap(), Some(kv("/c/a", "a3", r1, r5)));
    assert_eq!(s.list("/c/", at(r6)).await.unwrap().kvs.len(), 2);
}

async fn count_counts_keys_under_a_prefix(s: S) {
    for i in 1..=5 {
        s.create(&format!("/n/{i}"), b("x")).await.unwrap();
    }
    s.create("/n2/1", b("x")).await.unwrap();
    s.delete("/n/3", None).await.unwrap();
    assert_eq!(s.count("/n/").await.unwrap(), 4);
    assert_eq!(s.count("/n").await.unwrap(), 5);
    assert_eq!(s.count("/none/").await.unwrap(), 0);
}

async fn concurrent_writers_get_unique_revisions(s: S) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 100;
    let before = s.current_revision().await.unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut revisions = Vec::with_capacity(PER_TASK);
                for i in 0..PER_TASK {
                    let key = format!("/cc/{t:02}/{i:03}");
                    revisions.push((key.clone(), s.create(&key, b(&key)).await.unwrap()));
                }
                revisions
            })
        })
        .collect();
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let total = TASKS * PER_TASK;
    println!(
        "{total} creates from {TASKS} tasks in {elapsed:?}: {:.0} creates/s",
        total as f64 / elapsed.as_secs_f64()
    );
    let revisions: BTreeSet<Revision> = written.iter().map(|(_, r)| *r).collect();
    assert_eq!(revisions.len(), total, "every create got its own revision");
    assert_eq!(
        revisions,
        (before + 1..=before + total as i64).collect::<BTreeSet<_>>()
    );
    let list = s.list("/cc/", ListOptions::default()).await.unwrap();
    assert_eq!(list.kvs.len(), total);
    written.sort();
    for (kv, (key, revision)) in list.kvs.iter().zip(&written) {
        assert_eq!((&kv.key, kv.mod_revision), (key, *revision));
    }
    assert_eq!(s.count("/cc/").await.unwrap(), total as u64);
}

macro_rules! backend_tests {
    ($backend:ident; $($case:ident),*) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = crate::support::$backend().await;
                    super::$case(backend.store.clone()).await;
                }
            )*
        }
    };
}

macro_rules! contract_tests {
    ($($case:ident),* $(,)?) => {
        backend_tests!(memory; $($case),*);
        backend_tests!(sqlite; $($case),*);
        backend_tests!(etcd; $($case),*);
    };
}

contract_tests!(
    create_then_get,
    create_twice_is_already_exists,
    update_checks_the_expected_revision,
    delete_with_and_without_expected,
    revisions_grow_by_one_per_write,
    list_isolates_prefixes,
    list_pages_at_a_fixed_revision,
    list_at_an_older_revision,
    watch_replays_then_follows,
    watch_during_writes_has_no_gaps_or_duplicates,
    watch_sees_only_its_prefix,
    delete_events_carry_the_previous_value,
    compaction_forgets_old_revisions,
    count_counts_keys_under_a_prefix,
    concurrent_writers_get_unique_revisions,
);
