//! Write throughput of the SQLite and etcd backends (ignored by default; run with
//! `cargo test -p krust-store --release --test throughput -- --ignored --nocapture`).

mod support;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use krust_store::Store;

/// Creates `tasks * per_task` keys from `tasks` concurrent tasks; returns creates/s.
async fn creates_per_second(store: Arc<dyn Store>, tasks: usize, per_task: usize) -> f64 {
    let value = Bytes::from(vec![b'x'; 512]);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let store = store.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    store
                        .create(&format!("/bench/{tasks}/{t}/{i}"), value.clone())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    (tasks * per_task) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a check"]
async fn write_throughput() {
    for (name, backend) in [
        ("sqlite", support::sqlite().await),
        ("etcd", support::etcd().await),
    ] {
        for (tasks, per_task) in [(1, 1000), (16, 500), (64, 200)] {
            let rate = creates_per_second(backend.store.clone(), tasks, per_task).await;
            println!("{name}: {tasks:>2} writers: {rate:>8.0} creates/s");
        }
    }
}
