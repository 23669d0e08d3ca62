//! core/v1 and events.k8s.io/v1 Events are two views of one stored object: an event
//! written by kube-rs's Recorder (events.k8s.io/v1) reads as a core Event (and shows
//! in `kubectl describe` and `kubectl get events`), and a core Event reads and
//! watches as an events.k8s.io one.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent};
use k8s_openapi::api::events::v1::Event;
use krust_e2e::TestServer;
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_in_either_api_read_in_both() {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let map = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "subject"}})).unwrap(),
        )
        .await
        .unwrap();

    // Written through events.k8s.io/v1, by kube-rs's Recorder.
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "krust-test-controller".into(),
            instance: Some("test-1".into()),
        },
    );
    recorder
        .publish(
            &RecordedEvent {
                type_: EventType::Warning,
                reason: "SomethingHappened".into(),
                note: Some("the subject changed".into()),
                action: "Checking".into(),
                secondary: None,
            },
            &map.object_ref(&()),
        )
        .await
        .unwrap();

    // ...read as core/v1.
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let listed = core
        .list(&ListParams::default().fields("involvedObject.name=subject"))
        .await
        .unwrap()
        .items;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let event = &listed[0];
    assert_eq!(event.message.as_deref(), Some("the subject changed"));
    assert_eq!(event.reason.as_deref(), Some("SomethingHappened"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(
        event.reporting_component.as_deref(),
        Some("krust-test-controller")
    );

    // ...and by kubectl.
    let output =
        tokio::task::block_in_place(|| server.kubectl(["describe", "configmap", "subject"]));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("SomethingHappened") && text.contains("the subject changed"),
        "{text}"
    );
    let output = tokio::task::block_in_place(|| server.kubectl(["get", "events"]));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("SomethingHappened"), "{text}");

    // Written through core/v1, seen (listed and watched) through events.k8s.io/v1.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let start = events.list(&ListParams::default()).await.unwrap();
    let mut watch = events
        .watch(
            &WatchParams::default().timeout(20),
            start.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    core.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "subject.core"},
            "involvedObject": {"kind": "ConfigMap", "name": "subject", "namespace": "default"},
            "reason": "CoreReason", "message": "written as core", "type": "Normal",
            "count": 2, "source": {"component": "old-style"},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), watch.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Added(seen) = seen else {
        panic!("expected an ADDED event, got {seen:?}");
    };
    assert_eq!(seen.note.as_deref(), Some("written as core"));
    assert_eq!(
        seen.regarding.as_ref().unwrap().name.as_deref(),
        Some("subject")
    );
    assert_eq!(seen.deprecated_count, Some(2));
    assert_eq!(
        seen.deprecated_source
            .as_ref()
            .unwrap()
            .component
            .as_deref(),
        Some("old-style")
    );
    let fetched = events.get("subject.core").await.unwrap();
    assert_eq!(fetched.reason.as_deref(), Some("CoreReason"));

    // Deleted in one view, gone in the other.
    events
        .delete("subject.core", &DeleteParams::default())
        .await
        .unwrap();
    assert!(core.get_opt("subject.core").await.unwrap().is_none());
}
