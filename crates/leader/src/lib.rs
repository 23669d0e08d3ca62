//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! package does it for kube-scheduler and kube-controller-manager.
//!
//! A [`LeaderElector`] is one candidate. [`LeaderElector::run`] loops forever: it waits
//! until it holds the Lease (creating it, or taking it over once the holder let it
//! expire), runs the caller's work while it renews the Lease every
//! [`ElectionConfig::renew_interval`], and drops (aborts) that work the moment it can
//! no longer prove it holds the Lease, then becomes a candidate again.
//!
//! Every write is conditional on the resourceVersion that was read (optimistic
//! concurrency), so two candidates can never both believe they took the Lease. Whether
//! a Lease expired is judged as client-go does, by the local clock: the holder's record
//! must not have changed for `leaseDurationSeconds` since this candidate first saw it,
//! so clock skew between machines does not matter.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// Timing of an election; the defaults are kube-scheduler's.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// How long a Lease stays valid without a renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How often the leader renews the Lease.
    pub renew_interval: Duration,
    /// How long the leader keeps working while renewals fail; after that it stops.
    pub renew_deadline: Duration,
    /// How often a candidate looks at the Lease again.
    pub retry_period: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate for the Lease `namespace/name`.
pub struct LeaderElector {
    leases: Api<Lease>,
    name: String,
    identity: String,
    config: ElectionConfig,
    /// The holder record last seen, and when it was first seen (for expiry).
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl LeaderElector {
    /// A candidate called `identity` for the Lease `namespace/name`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        config: ElectionConfig,
    ) -> LeaderElector {
        LeaderElector {
            leases: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            config,
            observed: None,
        }
    }

    /// Runs `work()` whenever this candidate is the leader, forever. The future `work`
    /// returns is dropped as soon as leadership is lost; a new one is made when it is
    /// won again. Returns only if `work` itself finishes (with its result).
    pub async fn run<F, Fut, T>(mut self, mut work: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            self.acquire().await;
            tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
            let work = work();
            tokio::pin!(work);
            tokio::select! {
                result = &mut work => return result,
                () = self.keep_renewing() => {
                    tracing::warn!(lease = %self.name, identity = %self.identity, "lost the lease; stopped working");
                }
            }
        }
    }

    /// Waits until this candidate holds the Lease.
    async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(lease = %self.name, %error, "cannot take the lease yet")
                }
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease until a renewal fails for longer than the renew deadline, or
    /// another candidate holds it.
    async fn keep_renewing(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_interval).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "cannot renew the lease");
                    if last_renewed.elapsed() >= self.config.renew_deadline {
                        return;
                    }
                }
            }
        }
    }

    /// One attempt: true when this candidate holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let duration_seconds = self.config.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_me = holder.as_deref() == Some(self.identity.as_str());
        let record = (holder.clone(), spec.renew_time.clone());
        let first_seen = match &self.observed {
            Some((h, r, seen)) if (h, r) == (&record.0, &record.1) => *seen,
            _ => Instant::now(),
        };
        self.observed = Some((record.0, record.1, first_seen));
        let lease_seconds = spec
            .lease_duration_seconds
            .unwrap_or(duration_seconds)
            .max(1);
        let expired = first_seen.elapsed() >= Duration::from_secs(lease_seconds as u64);
        if holder.is_some() && !held_by_me && !expired {
            return Ok(false);
        }
        if !held_by_me {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(now);
        // `replace` sends the resourceVersion read above: a concurrent writer gets 409.
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                let spec = updated.spec.unwrap_or_default();
                self.observed = Some((spec.holder_identity, spec.renew_time, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// A default identity for this process: the host name plus a random suffix, as
/// client-go's `<hostname>_<uuid>`.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "krust".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}_{:08x}{:04x}", nanos, std::process::id() & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kube_schedulers() {
        let config = ElectionConfig::default();
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.renew_interval, Duration::from_secs(2));
        assert!(config.renew_deadline < config.lease_duration);
    }

    #[test]
    fn identities_differ_between_calls_and_name_the_host() {
        let a = default_identity();
        std::thread::sleep(Duration::from_millis(2));
        let b = default_identity();
        assert_ne!(a, b);
        assert!(a.contains('_'));
    }
}
