//! The same CRUD and watch through the two other clients users have: kube-rs (typed
//! Api and the runtime watcher) and the official Python client.

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use krust_e2e::TestServer;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_typed_crud_and_watcher() {
    let server = TestServer::start();
    let client = server.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "rs"}})).unwrap(),
        )
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "rs");

    // The watcher sees the initial list (empty) then every change.
    let stream = watcher(maps.clone(), watcher::Config::default());
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(event)) = stream.try_next().await {
            if events_tx.send(event).is_err() {
                break;
            }
        }
    });
    // Wait for the watcher's initial listing to finish.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events_rx.recv())
            .await
            .unwrap()
        {
            Some(watcher::Event::InitDone) => break,
            Some(_) => continue,
            None => panic!("watcher ended"),
        }
    }

    let created = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "one"}, "data": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let mut fetched = maps.get("one").await.unwrap();
    fetched
        .data
        .as_mut()
        .unwrap()
        .insert("k2".into(), "v2".into());
    let replaced = maps
        .replace("one", &PostParams::default(), &fetched)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    let conflict = maps
        .replace("one", &PostParams::default(), &fetched)
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, kube::Error::Api(ref s) if s.code == 409),
        "{conflict:?}"
    );
    maps.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k3": "v3"}})),
    )
    .await
    .unwrap();
    let listed = maps.list(&ListParams::default().labels("")).await.unwrap();
    // Besides the cluster CA every namespace gets.
    let listed: Vec<_> = listed
        .items
        .into_iter()
        .filter(|m| m.metadata.name.as_deref() != Some("kube-root-ca.crt"))
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].data.as_ref().unwrap().len(), 3);
    let missing = maps.get("absent").await.unwrap_err();
    assert!(matches!(missing, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"));
    maps.delete("one", &DeleteParams::default()).await.unwrap();

    let mut applied = 0;
    let mut deleted = false;
    while !deleted {
        match tokio::time::timeout(Duration::from_secs(10), events_rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            watcher::Event::Apply(cm) if cm.metadata.name.as_deref() == Some("one") => applied += 1,
            watcher::Event::Delete(cm) if cm.metadata.name.as_deref() == Some("one") => {
                deleted = true
            }
            _ => {}
        }
    }
    assert_eq!(applied, 3, "created, replaced and patched");
    follower.abort();

    // Typed objects with nested specs round-trip, and the scale subresource works.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "rs");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let scale = deployments.get_scale("d").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    deployments
        .patch_scale(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(
        deployments.get("d").await.unwrap().spec.unwrap().replicas,
        Some(7)
    );
    let all = deployments.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 1);
}

#[test]
fn python_client_crud_and_watch() {
    let server = TestServer::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/crud_watch.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .env("KUBECONFIG", server.kubeconfig_path())
        .env("NAMESPACE", "py")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "the Python client test failed (install it with `pip install kubernetes`, as `make test` does):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn requests_beyond_the_inflight_limit_get_429() {
    let server = TestServer::start_with(krust_e2e::ServerOptions {
        extra_args: vec!["--max-requests-inflight=1".into()],
        ..Default::default()
    });
    // Raw requests: kube-rs would retry a 429 by itself. A list that waits for a
    // resourceVersion the server has not reached holds the only read slot for a few
    // seconds (then answers 504); reads meanwhile must get 429. If a polling read
    // held the slot when the slow one arrived, the slow one got the 429: try again.
    let mut refused = None;
    for _attempt in 0..5 {
        std::thread::scope(|scope| {
            let slow = scope.spawn(|| {
                server.get("/api/v1/namespaces?resourceVersion=999999999&resourceVersionMatch=NotOlderThan")
            });
            let mut seen = None;
            while !slow.is_finished() {
                let (code, body) = server.get("/api/v1/namespaces").unwrap();
                if code == 429 {
                    seen = Some(body);
                }
            }
            let (slow_code, _) = slow.join().unwrap().unwrap();
            if slow_code == 504 {
                refused = seen;
            }
        });
        if refused.is_some() {
            break;
        }
    }
    let refused = refused.expect("a read while the only slot was taken was never refused");
    assert!(refused.contains("TooManyRequests"), "{refused}");
    // Once the slot is free again, reads are served.
    let (code, _) = server.get("/api/v1/namespaces").unwrap();
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscalers_read_the_same_through_v1_and_v2() {
    use k8s_openapi::api::autoscaling::{v1, v2};
    let server = TestServer::start();
    let client = server.client().await;
    let old: Api<v1::HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let new: Api<v2::HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let created = old
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                         "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        created.spec.unwrap().target_cpu_utilization_percentage,
        Some(70)
    );
    let mut as_v2 = new.get("web").await.unwrap();
    let metrics = as_v2.spec.as_ref().unwrap().metrics.clone().unwrap();
    assert_eq!(
        metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .target
            .average_utilization,
        Some(70)
    );
    // A metric v1 can not express survives a round trip through v1.
    as_v2.spec.as_mut().unwrap().metrics.as_mut().unwrap().push(
        serde_json::from_value(json!({"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}))
            .unwrap(),
    );
    new.replace("web", &PostParams::default(), &as_v2)
        .await
        .unwrap();
    let mut as_v1 = old.get("web").await.unwrap();
    assert_eq!(
        as_v1
            .spec
            .as_ref()
            .unwrap()
            .target_cpu_utilization_percentage,
        Some(70)
    );
    as_v1.spec.as_mut().unwrap().max_replicas = 9;
    old.replace("web", &PostParams::default(), &as_v1)
        .await
        .unwrap();
    let after = new.get("web").await.unwrap().spec.unwrap();
    assert_eq!(after.max_replicas, 9);
    let names: Vec<String> = after
        .metrics
        .unwrap()
        .iter()
        .map(|m| m.resource.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(names, ["cpu", "memory"]);
    // Lists and watches through v1 are converted too.
    let listed = old.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].spec.as_ref().unwrap().max_replicas, 9);
}
