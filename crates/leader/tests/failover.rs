//! Leader election against a real `krust server`: one leader at a time, failover when
//! the leader dies, and the work stops as soon as another holder takes the Lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use krust_e2e::TestServer;
use krust_leader::{ElectionConfig, LeaderElector};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(20);

fn fast() -> ElectionConfig {
    ElectionConfig {
        lease_duration: Duration::from_secs(2),
        renew_interval: Duration::from_millis(200),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(200),
    }
}

/// Starts a candidate whose work publishes its name while it runs.
fn candidate(
    client: kube::Client,
    lease: &str,
    identity: &'static str,
    leader: watch::Sender<Option<&'static str>>,
    started: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let elector = LeaderElector::new(client, "kube-system", lease, identity, fast());
    tokio::spawn(async move {
        elector
            .run(|| {
                let leader = leader.clone();
                let started = started.clone();
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    leader.send_replace(Some(identity));
                    // Clears the flag when this work is dropped.
                    struct Clear(watch::Sender<Option<&'static str>>, &'static str);
                    impl Drop for Clear {
                        fn drop(&mut self) {
                            self.0.send_if_modified(|v| {
                                let mine = *v == Some(self.1);
                                if mine {
                                    *v = None;
                                }
                                mine
                            });
                        }
                    }
                    let _clear = Clear(leader, identity);
                    std::future::pending::<()>().await
                }
            })
            .await
    })
}

async fn wait_for(rx: &mut watch::Receiver<Option<&'static str>>, want: Option<&'static str>) {
    tokio::time::timeout(DEADLINE, rx.wait_for(|v| *v == want))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for leader {want:?}"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_candidate_takes_over_when_the_leader_dies() {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    let (tx, mut rx) = watch::channel(None);
    let started = Arc::new(AtomicUsize::new(0));
    let a = candidate(
        client.clone(),
        "failover-test",
        "a",
        tx.clone(),
        started.clone(),
    );
    wait_for(&mut rx, Some("a")).await;
    let b = candidate(
        client.clone(),
        "failover-test",
        "b",
        tx.clone(),
        started.clone(),
    );

    // b stays a candidate while a renews (several lease durations).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(*rx.borrow(), Some("a"));
    assert_eq!(started.load(Ordering::SeqCst), 1, "only one leader worked");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = leases.get("failover-test").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_duration_seconds, Some(2));

    // a dies without releasing: b takes over once the lease expired.
    let died = Instant::now();
    a.abort();
    let _ = a.await;
    wait_for(&mut rx, Some("b")).await;
    assert!(
        died.elapsed() >= Duration::from_secs(1),
        "b waited for the lease to expire"
    );
    let spec = leases.get("failover-test").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stops_when_someone_else_holds_the_lease() {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    let (tx, mut rx) = watch::channel(None);
    let started = Arc::new(AtomicUsize::new(0));
    let a = candidate(client.clone(), "stolen-test", "a", tx, started);
    wait_for(&mut rx, Some("a")).await;

    // An intruder writes itself in as the holder (as a partitioned leader's successor would).
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut lease = leases.get("stolen-test").await.unwrap();
        let spec = lease.spec.as_mut().unwrap();
        spec.holder_identity = Some("intruder".into());
        spec.lease_duration_seconds = Some(3600);
        match leases
            .replace("stolen-test", &PostParams::default(), &lease)
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && Instant::now() < deadline => continue,
            Err(error) => panic!("cannot take the lease: {error}"),
        }
    }
    wait_for(&mut rx, None).await;
    let spec = leases.get("stolen-test").await.unwrap().spec.unwrap();
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some("intruder"),
        "a did not take it back"
    );
    a.abort();
}
