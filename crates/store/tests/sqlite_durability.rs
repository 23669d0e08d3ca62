//! Acknowledged SQLite writes survive `kill -9` of the process at any moment.
//!
//! The test runs its own test binary again as a child in "writer mode" (marked by
//! an environment variable). The child creates keys from several tasks and prints
//! `ACK <key>` only after the create returned `Ok`. The parent kills the child with
//! SIGKILL in the middle of the storm, reopens the store and checks that every
//! acknowledged key is there with its value.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use krust_store::Store;
use krust_store::sqlite::SqliteStore;

/// Set in the child: the database path to write to.
const CHILD_DB_ENV: &str = "KRUST_STORE_DURABILITY_CHILD_DB";
const TEST_NAME: &str = "acknowledged_writes_survive_kill_9";
const WRITER_TASKS: usize = 8;
/// How long the parent waits for the child's acknowledgements.
const ACK_DEADLINE: Duration = Duration::from_secs(60);

fn value_of(key: &str) -> Bytes {
    Bytes::from(format!(
        "value of {key}, padded to look like an object: {:0>200}",
        0
    ))
}

/// Kills the child (SIGKILL) and reaps it when dropped, so that no writer outlives a
/// failed test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Ok(db) = std::env::var(CHILD_DB_ENV) {
        run_writer(Path::new(&db));
        return;
    }
    for (round, kill_after) in [200usize, 450, 700].into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let db = dir.path().join("state.db");
        let child = Command::new(std::env::current_exe().expect("find the test binary"))
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DB_ENV, &db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the writer child");
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();

        let deadline = Instant::now() + ACK_DEADLINE;
        let mut acked = Vec::new();
        while acked.len() < kill_after {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} acks within {ACK_DEADLINE:?}",
                acked.len()
            );
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(key) = line.strip_prefix("ACK ") {
                        acked.push(key.to_string());
                    }
                }
                other => panic!("round {round}: the writer child stopped early: {other:?}"),
            }
        }
        child.0.kill().expect("kill -9 the writer");
        child.0.wait().expect("reap the writer");
        // Acks printed before the kill but not read yet count too.
        for line in lines.map_while(Result::ok) {
            if let Some(key) = line.strip_prefix("ACK ") {
                acked.push(key.to_string());
            }
        }

        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = SqliteStore::open(&db).expect("reopen the store after kill -9");
            let revision = store.current_revision().await.unwrap();
            for key in &acked {
                let kv = store
                    .get(key)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("round {round}: acknowledged {key} was lost"));
                assert_eq!(kv.value, value_of(key), "round {round}: value of {key}");
                assert!(kv.mod_revision <= revision);
            }
            let count = store.count("/durable/").await.unwrap();
            assert!(count as usize >= acked.len());
            // The reopened store keeps counting from where the child stopped.
            let next = store.create("/after-crash", Bytes::new()).await.unwrap();
            assert_eq!(next, revision + 1);
            println!(
                "round {round}: {} acknowledged, {count} present, revision {revision}",
                acked.len()
            );
        });
    }
}

/// The child: creates keys from several tasks until killed, acknowledging each.
fn run_writer(db: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Arc::new(SqliteStore::open(db).expect("open the store in the child"));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..WRITER_TASKS)
            .map(|task| {
                let store = store.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    // Bounded, so an orphaned child ends by itself.
                    for i in 0..50_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("/durable/{task}/{i}");
                        store.create(&key, value_of(&key)).await.unwrap();
                        // `println!` flushes each line; a closed pipe (the parent is
                        // gone) makes it panic, which ends the child.
                        println!("ACK {key}");
                    }
                })
            })
            .collect();
        for task in tasks {
            if task.await.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
        }
    });
}
