//! An acknowledged write survives `kill -9` of the server at any moment: writers
//! create objects as fast as they can, the server is killed mid-storm, restarted on
//! the same data dir, and every create that was answered with success is there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use krust_e2e::{EtcdServer, ServerOptions, TestServer};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

async fn storm_then_kill(mut server: TestServer, rounds: usize) {
    for round in 0..rounds {
        let client = server.client().await;
        let namespace = format!("storm-{round}");
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
            )
            .await
            .unwrap();
        let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let mut writers = Vec::new();
        for writer in 0..8 {
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let acknowledged = acknowledged.clone();
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("w{writer}-{i}");
                    let value = format!("value-{writer}-{i}");
                    let object = serde_json::from_value(
                        json!({"metadata": {"name": name}, "data": {"v": value}}),
                    )
                    .unwrap();
                    match maps.create(&PostParams::default(), &object).await {
                        Ok(_) => {
                            acknowledged.lock().unwrap().insert(name, value);
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
        // Kill once a few hundred creates were acknowledged, a different amount each round.
        let target = 150 + round * 170;
        krust_e2e::wait_until(
            "creates to be acknowledged",
            Duration::from_secs(30),
            || acknowledged.lock().unwrap().len() >= target,
        );
        server.kill9();
        for writer in writers {
            let _ = writer.await;
        }
        server.restart();
        let maps: Api<ConfigMap> = Api::namespaced(server.client().await, &namespace);
        let stored: BTreeMap<String, String> = maps
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            // The cluster CA every namespace gets is not one of the writes.
            .filter(|cm| cm.metadata.name.as_deref() != Some("kube-root-ca.crt"))
            .map(|cm| {
                (
                    cm.metadata.name.unwrap(),
                    cm.data.unwrap_or_default()["v"].clone(),
                )
            })
            .collect();
        let acknowledged = acknowledged.lock().unwrap();
        for (name, value) in acknowledged.iter() {
            assert_eq!(
                stored.get(name),
                Some(value),
                "acknowledged {name} was lost in round {round}"
            );
        }
        assert!(acknowledged.len() >= target);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_on_sqlite() {
    storm_then_kill(TestServer::start(), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_on_etcd() {
    let etcd = EtcdServer::start();
    let server = TestServer::start_with(ServerOptions {
        datastore: Some(etcd.url()),
        ..Default::default()
    });
    storm_then_kill(server, 2).await;
}
