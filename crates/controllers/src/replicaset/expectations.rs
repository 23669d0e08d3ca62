//! Expectations, as upstream's `UIDTrackingControllerExpectations`: the pods a
//! controller created or deleted but has not yet seen come (or go) through its
//! cache. While any are outstanding, the controller does not create or delete
//! again for that owner, so a stale cache never makes it act twice.
//!
//! Pods are tracked by UID. The cache's change stream marks them seen
//! ([`Expectations::observe`]); an expectation older than [`EXPECTATION_TTL`] is
//! dropped, as upstream does, so a lost event cannot block an owner for ever.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::ObjectKey;

/// How long an unmet expectation holds an owner back.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Outstanding creates and deletes per owner.
#[derive(Default)]
pub struct Expectations {
    owners: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    /// Whether `owner` has nothing outstanding (or its expectations expired).
    pub fn satisfied(&self, owner: &ObjectKey) -> bool {
        let mut owners = self.owners.lock().unwrap();
        let Some(pending) = owners.get(owner) else {
            return true;
        };
        let expired = pending
            .since
            .is_some_and(|since| since.elapsed() > EXPECTATION_TTL);
        if expired || (pending.creates.is_empty() && pending.deletes.is_empty()) {
            owners.remove(owner);
            return true;
        }
        false
    }

    /// Records pods `owner` created (by UID). `already_seen` tells whether the cache
    /// has a pod already, in which case it is not waited for.
    pub fn expect_creates(
        &self,
        owner: &ObjectKey,
        uids: impl IntoIterator<Item = String>,
        already_seen: impl Fn(&str) -> bool,
    ) {
        let mut owners = self.owners.lock().unwrap();
        let pending = owners.entry(owner.clone()).or_default();
        pending.since = Some(Instant::now());
        // Checked under the lock: a change observed before this point is in the
        // cache already, one observed after it finds the UID recorded.
        pending
            .creates
            .extend(uids.into_iter().filter(|uid| !already_seen(uid)));
    }

    /// Records pods `owner` deleted (by UID). `already_gone` tells whether the cache
    /// shows a pod gone or terminating already.
    pub fn expect_deletes(
        &self,
        owner: &ObjectKey,
        uids: impl IntoIterator<Item = String>,
        already_gone: impl Fn(&str) -> bool,
    ) {
        let mut owners = self.owners.lock().unwrap();
        let pending = owners.entry(owner.clone()).or_default();
        pending.since = Some(Instant::now());
        pending
            .deletes
            .extend(uids.into_iter().filter(|uid| !already_gone(uid)));
    }

    /// The cache showed pod `uid` of `owner`; `gone` when deleted or terminating.
    pub fn observe(&self, owner: &ObjectKey, uid: &str, gone: bool) {
        let mut owners = self.owners.lock().unwrap();
        if let Some(pending) = owners.get_mut(owner) {
            pending.creates.remove(uid);
            if gone {
                pending.deletes.remove(uid);
            }
        }
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &ObjectKey) {
        self.owners.lock().unwrap().remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_are_awaited_until_observed() {
        let expectations = Expectations::default();
        let owner = ObjectKey::new("ns", "rs");
        assert!(expectations.satisfied(&owner));
        expectations.expect_creates(&owner, ["a".into(), "b".into(), "c".into()], |uid| {
            uid == "c"
        });
        assert!(!expectations.satisfied(&owner));
        expectations.observe(&owner, "a", false);
        assert!(!expectations.satisfied(&owner));
        expectations.observe(&owner, "b", false);
        assert!(expectations.satisfied(&owner));
    }

    #[test]
    fn deletes_are_awaited_until_gone() {
        let expectations = Expectations::default();
        let owner = ObjectKey::new("ns", "rs");
        expectations.expect_deletes(&owner, ["a".into()], |_| false);
        expectations.observe(&owner, "a", false);
        assert!(!expectations.satisfied(&owner));
        expectations.observe(&owner, "a", true);
        assert!(expectations.satisfied(&owner));
        expectations.expect_deletes(&owner, ["b".into()], |_| false);
        expectations.forget(&owner);
        assert!(expectations.satisfied(&owner));
    }
}
