//! The Event recorder of krust's components (controllers, scheduler, node agent).
//!
//! Events are written as events.k8s.io/v1 objects. An occurrence is the same as an
//! earlier one when everything about it is: the object it regards, its type, reason,
//! action, note, related object and reporter. A repeat within [`SERIES_TTL`] of the
//! last one is counted in that Event's `series` (count and last time) instead of
//! written anew, as upstream's core/v1 recorder counts identical events; a different
//! note (`Scaled up replica set web-1 to 3`, then `... to 1`) is an Event of its own,
//! so `kubectl describe` tells the whole story in order.
//!
//! The types of the occurrence are kube-rs's ([`Event`], [`EventType`],
//! [`Reporter`]), so a component only chooses this [`Recorder`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as EventObject;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};

/// How long after its last repeat an Event may still be counted on.
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// What makes two occurrences the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: ObjectKey,
    related: Option<ObjectKey>,
    type_: EventType,
    reason: String,
    action: String,
    note: Option<String>,
}

/// The identifying fields of an object reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ObjectKey {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl From<&ObjectReference> for ObjectKey {
    fn from(reference: &ObjectReference) -> Self {
        ObjectKey {
            api_version: reference.api_version.clone(),
            kind: reference.kind.clone(),
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            uid: reference.uid.clone(),
        }
    }
}

/// An Event written earlier: where it is, and how often it happened.
#[derive(Clone, Debug)]
struct Written {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// Publishes a component's Events. Cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
    written: Arc<Mutex<HashMap<Key, Written>>>,
}

impl Recorder {
    /// A recorder for the component `reporter` names.
    pub fn new(client: kube::Client, reporter: Reporter) -> Recorder {
        Recorder {
            client,
            reporter,
            written: Arc::default(),
        }
    }

    /// Records `event` about the object `regarding` refers to: a new Event, or one
    /// more in the series of the same occurrence. Events of cluster-scoped objects
    /// go to the `default` namespace.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = Key {
            regarding: regarding.into(),
            related: event.secondary.as_ref().map(ObjectKey::from),
            type_: event.type_,
            reason: event.reason.clone(),
            action: event.action.clone(),
            note: event.note.clone(),
        };
        let repeat = self.repeat_of(&key);
        let now = Timestamp::now();
        if let Some(written) = repeat {
            let api: Api<EventObject> = Api::namespaced(self.client.clone(), &written.namespace);
            let series = serde_json::json!({"series": {
                "count": written.count,
                "lastObservedTime": MicroTime(now),
            }});
            match api
                .patch(
                    &written.name,
                    &PatchParams::default(),
                    &Patch::Merge(&series),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // Gone (its time to live in the API ended): written anew below.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let object = self.new_event(event, regarding, now);
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let api: Api<EventObject> = Api::namespaced(self.client.clone(), &namespace);
        let created = api.create(&PostParams::default(), &object).await?;
        self.written.lock().unwrap().insert(
            key,
            Written {
                namespace,
                name: created.metadata.name.unwrap_or_default(),
                count: 1,
                last: Instant::now(),
            },
        );
        Ok(())
    }

    /// The earlier Event of this occurrence with its count raised, if it is recent
    /// enough to count on; forgets the ones that are not.
    fn repeat_of(&self, key: &Key) -> Option<Written> {
        let mut written = self.written.lock().unwrap();
        written.retain(|_, earlier| earlier.last.elapsed() < SERIES_TTL);
        let earlier = written.get_mut(key)?;
        earlier.count += 1;
        earlier.last = Instant::now();
        Some(earlier.clone())
    }

    fn new_event(&self, event: &Event, regarding: &ObjectReference, now: Timestamp) -> EventObject {
        let namespace = regarding
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let base = regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        EventObject {
            metadata: ObjectMeta {
                name: Some(format!("{base}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            reason: Some(event.reason.clone()),
            action: Some(event.action.clone()),
            note: event.note.clone(),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..EventObject::default()
        }
    }
}
