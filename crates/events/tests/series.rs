//! The recorder against a real server: a repeated occurrence is one Event whose
//! series counts it, a different note is an Event of its own, and an Event deleted
//! in the API is written anew when its occurrence repeats.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as EventObject;
use krust_e2e::TestServer;
use krust_events::{Event, EventType, Recorder, Reporter};
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

fn scaled(to: u32) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "ScalingReplicaSet".into(),
        note: Some(format!("Scaled replica set web-1 to {to}")),
        action: "Scale".into(),
        secondary: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_counted_and_other_notes_are_events_of_their_own() {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let map = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "subject"}})).unwrap(),
        )
        .await
        .unwrap();
    let reference = map.object_ref(&());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "krust-test".into(),
            instance: None,
        },
    );
    for event in [scaled(3), scaled(3), scaled(1), scaled(3)] {
        recorder.publish(&event, &reference).await.unwrap();
    }

    let events: Api<EventObject> = Api::namespaced(client.clone(), "default");
    let mut listed = events
        .list(&ListParams::default().fields("regarding.name=subject"))
        .await
        .unwrap()
        .items;
    listed.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    let seen: Vec<(Option<String>, Option<i32>)> = listed
        .iter()
        .map(|e| (e.note.clone(), e.series.as_ref().map(|s| s.count)))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("Scaled replica set web-1 to 3".into()), Some(3)),
            (Some("Scaled replica set web-1 to 1".into()), None),
        ]
    );
    assert_eq!(
        listed[0].reporting_controller.as_deref(),
        Some("krust-test")
    );
    // kubectl describe shows the count.
    let described =
        tokio::task::block_in_place(|| server.kubectl(["describe", "configmap", "subject"]));
    let text = String::from_utf8_lossy(&described.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("to 3"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("(x3 over"), "{text}");

    // Deleted in the API: the next repeat writes a new Event.
    let name = listed[1].metadata.name.clone().unwrap();
    events
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    recorder.publish(&scaled(1), &reference).await.unwrap();
    let again = events
        .list(&ListParams::default().fields("regarding.name=subject"))
        .await
        .unwrap()
        .items;
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(
        again.iter().any(
            |e| e.note.as_deref() == Some("Scaled replica set web-1 to 1")
                && e.metadata.name.as_deref() != Some(name.as_str())
        ),
        "{again:?}"
    );
}
