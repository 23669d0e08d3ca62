//! Events from the workload controllers, published in the background through
//! [`krust_events::Recorder`] (events.k8s.io/v1), with client-go's spam filter: each
//! object may emit a burst of [`BURST`] events, then one per [`REFILL`], so a
//! ReplicaSet creating 3,000 pods tells the story without 3,000 writes. The
//! Recorder counts exact repeats in an Event's `series`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krust_events::{Event, EventType, Recorder, Reporter};
use kube::Resource;
use tokio::sync::Semaphore;

/// Events an object may emit at once (client-go's `defaultSpamBurst`).
pub const BURST: f64 = 25.0;
/// How long an object waits for each further event (client-go: one per 5 minutes).
pub const REFILL: Duration = Duration::from_secs(300);
/// Event writes in flight at once: one, because the Recorder folds repeats into
/// one Event's `series` (a patch of the same object), and so that
/// events never crowd out the real work.
const IN_FLIGHT: usize = 1;
/// Objects whose budget is remembered before the oldest are forgotten.
const TRACKED: usize = 4096;

/// A controller's event publisher. Cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    budgets: Arc<Mutex<HashMap<String, (f64, Instant)>>>,
    in_flight: Arc<Semaphore>,
}

impl Events {
    /// Events reported by `controller` (e.g. `replicaset-controller`).
    pub fn new(client: kube::Client, controller: &str) -> Events {
        Events {
            recorder: Recorder::new(client, Reporter::from(controller)),
            budgets: Arc::new(Mutex::new(HashMap::new())),
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        }
    }

    /// Whether the object `uid` may emit one more event now (and spends it).
    fn allow(&self, uid: &str) -> bool {
        let mut budgets = self.budgets.lock().unwrap();
        if budgets.len() > TRACKED {
            let horizon = REFILL.mul_f64(BURST);
            budgets.retain(|_, (_, at)| at.elapsed() < horizon);
        }
        let now = Instant::now();
        let (tokens, at) = budgets.entry(uid.to_string()).or_insert((BURST, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() / REFILL.as_secs_f64()).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Publishes an event about `object` in the background; events are best effort.
    pub fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if !self.allow(object.meta().uid.as_deref().unwrap_or_default()) {
            return;
        }
        let recorder = self.recorder.clone();
        let in_flight = self.in_flight.clone();
        let reference = object.object_ref(&());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        tokio::spawn(async move {
            let _permit = in_flight.acquire_owned().await;
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::debug!(%error, "cannot publish an event");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_object_gets_a_burst_then_waits() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let events = Events::new(client, "test");
        let allowed = (0..100).filter(|_| events.allow("a")).count();
        assert_eq!(allowed, BURST as usize);
        assert!(events.allow("b"), "another object has its own budget");
    }
}
