//! API machinery details clients depend on, checked through kube-rs and raw
//! requests: paging with continue tokens, watch start points and 410 Gone,
//! bookmarks and `sendInitialEvents`, and the status codes of bad requests.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use krust_e2e::TestServer;
use kube::Api;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

async fn create_maps(maps: &Api<ConfigMap>, prefix: &str, count: usize) {
    for i in 0..count {
        let object = serde_json::from_value(
            json!({"metadata": {"name": format!("{prefix}-{i:03}"), "labels": {"set": prefix}}}),
        )
        .unwrap();
        maps.create(&PostParams::default(), &object).await.unwrap();
    }
}

/// Waits until the controllers published the cluster CA (`kube-root-ca.crt`) in
/// the namespace of `maps`: every namespace has it, so lists count it.
async fn root_ca_published(maps: &Api<ConfigMap>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while maps.get_opt("kube-root-ca.crt").await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "kube-root-ca.crt was not published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status code of a raw request.
async fn status_of(client: &kube::Client, request: http::Request<Vec<u8>>) -> (u16, String) {
    match client.request_text(request).await {
        Ok(_) => (200, String::new()),
        Err(kube::Error::Api(status)) => (status.code, status.reason),
        Err(other) => panic!("request failed without a Status: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_returns_a_consistent_snapshot() {
    let server = TestServer::start();
    let maps: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    root_ca_published(&maps).await;
    create_maps(&maps, "page", 25).await;
    let first = maps
        .list(&ListParams::default().labels("set=page").limit(10))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 10);
    let token = first.metadata.continue_.clone().expect("a continue token");
    // Writes after the first page do not show in later pages of the same list.
    create_maps(&maps, "page-late", 5).await;
    maps.delete("page-000", &Default::default()).await.unwrap();
    let mut names: Vec<String> = first
        .items
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    let mut token = Some(token);
    while let Some(next) = token {
        let page = maps
            .list(
                &ListParams::default()
                    .labels("set=page")
                    .limit(10)
                    .continue_token(&next),
            )
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version,
            first.metadata.resource_version
        );
        names.extend(page.items.iter().map(|m| m.metadata.name.clone().unwrap()));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
    }
    let expected: Vec<String> = (0..25).map(|i| format!("page-{i:03}")).collect();
    assert_eq!(names, expected);
    // Without selectors the server says how many items remain.
    let unfiltered = maps.list(&ListParams::default().limit(5)).await.unwrap();
    // 24 + 5 created, kube-root-ca.crt, 5 on this page.
    assert_eq!(
        unfiltered.metadata.remaining_item_count,
        Some(24 + 5 + 1 - 5)
    );
    // A token that is not one is a 400.
    let bad = maps
        .list(&ListParams::default().continue_token("garbage"))
        .await
        .unwrap_err();
    assert!(
        matches!(bad, kube::Error::Api(ref s) if s.code == 400),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_starts_where_asked_and_old_versions_are_gone() {
    let mut server = TestServer::start();
    let maps: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    root_ca_published(&maps).await;
    create_maps(&maps, "w", 3).await;
    let listed = maps.list(&ListParams::default()).await.unwrap();
    let rv = listed.metadata.resource_version.clone().unwrap();
    create_maps(&maps, "after", 2).await;
    // From a resourceVersion: only what came after it.
    let mut stream = maps
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let mut added = Vec::new();
    while added.len() < 2 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(m) => added.push(m.metadata.name.unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, ["after-000", "after-001"]);

    // After a restart the cache starts at the current revision: older ones are 410.
    server.restart();
    let maps: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let mut stream = maps
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_initial_events_ends_with_a_bookmark() {
    let server = TestServer::start();
    let maps: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    root_ca_published(&maps).await;
    create_maps(&maps, "init", 3).await;
    let params = WatchParams::streaming_lists().timeout(10);
    let mut stream = maps.watch(&params, "0").await.unwrap().boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(m) => initial.push(m.metadata.name.unwrap()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        initial,
        ["init-000", "init-001", "init-002", "kube-root-ca.crt"]
    );
    // Live events follow.
    create_maps(&maps, "live", 1).await;
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(m) => assert_eq!(m.metadata.name.as_deref(), Some("live-000")),
        other => panic!("unexpected {other:?}"),
    }
    // sendInitialEvents without bookmarks is refused.
    let client = server.client().await;
    let request = http::Request::get("/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan")
        .body(Vec::new())
        .unwrap();
    assert_eq!(status_of(&client, request).await.0, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_upstreams_status_codes() {
    let server = TestServer::start();
    let client = server.client().await;
    let path = "/api/v1/namespaces/default/configmaps";
    let request = |method: &str, uri: &str, content_type: &str, body: &str| {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .header("Content-Type", content_type)
            .body(body.as_bytes().to_vec())
            .unwrap()
    };
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#;
    let cases = [
        (
            request("POST", path, "text/plain", cm),
            415,
            "UnsupportedMediaType",
        ),
        (
            request("POST", path, "application/json", "{not json"),
            400,
            "BadRequest",
        ),
        (
            request(
                "POST",
                path,
                "application/json",
                r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"c"}}"#,
            ),
            400,
            "BadRequest",
        ),
        (
            request(
                "POST",
                path,
                "application/json",
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"UPPER"}}"#,
            ),
            422,
            "Invalid",
        ),
        (
            request("PUT", path, "application/json", cm),
            405,
            "MethodNotAllowed",
        ),
        (
            request(
                "GET",
                "/api/v1/namespaces/default/configmaps/absent",
                "application/json",
                "",
            ),
            404,
            "NotFound",
        ),
        (
            request(
                "GET",
                "/apis/nosuch.example.com/v1/things",
                "application/json",
                "",
            ),
            404,
            "NotFound",
        ),
        (
            request(
                "PATCH",
                &format!("{path}/absent"),
                "application/merge-patch+json",
                "{}",
            ),
            404,
            "NotFound",
        ),
    ];
    for (req, code, reason) in cases {
        let description = format!("{} {}", req.method(), req.uri());
        assert_eq!(
            status_of(&client, req).await,
            (code, reason.to_string()),
            "{description}"
        );
    }
    // Nothing of the refused requests was stored.
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let stored = maps.list(&ListParams::default()).await.unwrap().items;
    assert!(
        stored
            .iter()
            .all(|m| m.metadata.name.as_deref() == Some("kube-root-ca.crt")),
        "{stored:?}"
    );
    // dryRun validates and answers but stores nothing.
    let dry = request(
        "POST",
        &format!("{path}?dryRun=All"),
        "application/json",
        cm,
    );
    assert_eq!(status_of(&client, dry).await.0, 200);
    let stored = maps.list(&ListParams::default()).await.unwrap().items;
    assert!(
        stored
            .iter()
            .all(|m| m.metadata.name.as_deref() == Some("kube-root-ca.crt")),
        "{stored:?}"
    );
    // A stale resourceVersion on update is a 409 Conflict.
    create_maps(&maps, "c", 1).await;
    let stale = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c-000","resourceVersion":"1"}}"#;
    let put = request("PUT", &format!("{path}/c-000"), "application/json", stale);
    assert_eq!(status_of(&client, put).await, (409, "Conflict".to_string()));
    // Anonymous requests get 401, except health and version.
    let (code, _) = server.get_anonymous("/api/v1/namespaces").unwrap();
    assert_eq!(code, 401);
    for public in ["/readyz", "/livez", "/healthz", "/version"] {
        let (code, _) = server.get_anonymous(public).unwrap();
        assert_eq!(code, 200, "{public}");
    }
}

/// A scale patch names no resourceVersion, so writes racing with it are retried, not
/// answered 409; a scale update that names a stale resourceVersion is a conflict.
#[tokio::test]
async fn scale_patches_retry_races_and_stale_scale_updates_conflict() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};

    let server = TestServer::start();
    let client = server.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment = serde_json::from_value(json!({
        "metadata": {"name": "racy"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "racy"}},
            "template": {"metadata": {"labels": {"app": "racy"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let stale = deployments.get_scale("racy").await.unwrap();

    // Another writer changes the Deployment all the time while the scale patches run.
    let writer = {
        let deployments = deployments.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                let patch = json!({"metadata": {"annotations": {"tick": i.to_string()}}});
                let _ = deployments
                    .patch("racy", &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        })
    };
    for replicas in 1..=20 {
        let patch = json!({"spec": {"replicas": replicas}});
        let scale = deployments
            .patch_scale("racy", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("scale patch to {replicas} failed: {e}"));
        assert_eq!(scale.spec.unwrap().replicas, Some(replicas));
    }
    writer.await.unwrap();

    let error = deployments
        .replace_scale("racy", &PostParams::default(), &stale)
        .await
        .expect_err("a stale resourceVersion must conflict");
    assert!(
        matches!(&error, kube::Error::Api(status) if status.code == 409),
        "{error}"
    );
    let replicas = deployments
        .get("racy")
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas;
    assert_eq!(replicas, Some(20), "the stale update changed nothing");
}
