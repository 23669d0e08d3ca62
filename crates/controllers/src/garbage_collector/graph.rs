//! The ownership graph: every watched object, by uid, with its owner references and
//! the objects that name it as their owner.
//!
//! The graph is fed the informers' events in order ([`Graph::apply`],
//! [`Graph::delete`]) and answers with the [`Work`] the change calls for. It does no
//! I/O. An owner that is referenced but not (or no longer) observed is kept as a
//! *virtual* node, only to remember its dependents; it disappears with its last
//! dependent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::discovery::ResourceType;

/// An object's uid.
pub type Uid = String;

/// The finalizer that makes an owner wait for its blocking dependents.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer that makes an owner release its dependents before it goes.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// Who an object is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// None for cluster-scoped objects.
    pub namespace: Option<String>,
    pub uid: Uid,
}

/// One object in the graph.
#[derive(Clone, Debug)]
pub struct Node {
    pub identity: Identity,
    /// The watched resource type; None for virtual nodes.
    pub resource: Option<Arc<ResourceType>>,
    /// False for a virtual node: known only from owner references.
    pub observed: bool,
    /// Its owner references, as last observed.
    pub owners: Vec<OwnerReference>,
    /// Uids of the observed objects that name this one as an owner.
    pub dependents: HashSet<Uid>,
    /// It has a deletionTimestamp.
    pub being_deleted: bool,
    /// It is being deleted with the `foregroundDeletion` finalizer.
    pub deleting_dependents: bool,
    /// It is being deleted with the `orphan` finalizer.
    pub orphaning: bool,
}

impl Node {
    /// A node known only by its identity: not observed, no owners or dependents yet.
    fn new(identity: Identity) -> Node {
        Node {
            identity,
            resource: None,
            observed: false,
            owners: Vec::new(),
            dependents: HashSet::new(),
            being_deleted: false,
            deleting_dependents: false,
            orphaning: false,
        }
    }

    fn virtual_owner(reference: &OwnerReference, namespace: Option<String>) -> Node {
        Node::new(Identity {
            api_version: reference.api_version.clone(),
            kind: reference.kind.clone(),
            name: reference.name.clone(),
            namespace,
            uid: reference.uid.clone(),
        })
    }
}

/// What a change asks the garbage collector to look at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Objects to check: collect them if their owners are gone, or (for owners
    /// deleting their dependents) push their deletion on.
    pub attempt_to_delete: Vec<Uid>,
    /// Owners whose dependents must be orphaned.
    pub attempt_to_orphan: Vec<Uid>,
}

/// What the graph knows about an owner reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner is observed and not waiting for its dependents.
    Solid,
    /// The owner is observed, being deleted in the foreground.
    WaitingForDependents,
    /// The graph can not tell: the owner must be looked up on the server.
    Unknown,
}

/// The ownership graph.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<Uid, Node>,
}

fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

fn blocks(reference: &OwnerReference) -> bool {
    reference.block_owner_deletion == Some(true)
}

/// The group of an apiVersion (`apps/v1` -> `apps`, `v1` -> ``).
pub fn group_of(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map(|(group, _)| group)
        .unwrap_or("")
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// The node of `uid`.
    pub fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// How many nodes (observed and virtual) the graph holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The observed dependents of `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<&Node> {
        let Some(node) = self.nodes.get(uid) else {
            return Vec::new();
        };
        node.dependents
            .iter()
            .filter_map(|d| self.nodes.get(d))
            .filter(|d| d.observed)
            .collect()
    }

    /// The dependents of `uid` whose reference to it has `blockOwnerDeletion: true`.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<&Node> {
        self.dependents(uid)
            .into_iter()
            .filter(|d| d.owners.iter().any(|o| o.uid == uid && blocks(o)))
            .collect()
    }

    /// What the graph says about `reference`, held by an object in `namespace`.
    /// Only an observed owner with the same kind, group and name, in scope for the
    /// dependent, counts; anything else must be checked on the server.
    pub fn owner_state(&self, reference: &OwnerReference, namespace: Option<&str>) -> OwnerState {
        let Some(owner) = self.nodes.get(&reference.uid) else {
            return OwnerState::Unknown;
        };
        let id = &owner.identity;
        let matches = owner.observed
            && id.kind == reference.kind
            && id.name == reference.name
            && group_of(&id.api_version) == group_of(&reference.api_version)
            && (id.namespace.is_none() || id.namespace.as_deref() == namespace);
        match (matches, owner.deleting_dependents) {
            (false, _) => OwnerState::Unknown,
            (true, true) => OwnerState::WaitingForDependents,
            (true, false) => OwnerState::Solid,
        }
    }

    /// Records that an object was created or changed.
    pub fn apply(&mut self, resource: &Arc<ResourceType>, meta: &ObjectMeta) -> Work {
        let mut work = Work::default();
        let Some(uid) = meta.uid.clone() else {
            return work;
        };
        let namespace = meta.namespace.clone().filter(|ns| !ns.is_empty());
        let new_owners = meta.owner_references.clone().unwrap_or_default();
        let old_owners = match self.nodes.get(&uid) {
            Some(node) if node.observed => node.owners.clone(),
            _ => Vec::new(),
        };

        // Owners no longer referenced, or no longer blocked on: an owner waiting
        // for its dependents may now be free to go.
        for old in &old_owners {
            let new = new_owners.iter().find(|n| n.uid == old.uid);
            if new.is_none() {
                self.remove_dependent(&old.uid, &uid, &mut work);
            } else if blocks(old) && !new.is_some_and(blocks) {
                self.wake_waiting_owner(&old.uid, &mut work);
            }
        }
        for new in &new_owners {
            if !old_owners.iter().any(|o| o.uid == new.uid) {
                self.nodes
                    .entry(new.uid.clone())
                    .or_insert_with(|| Node::virtual_owner(new, namespace.clone()))
                    .dependents
                    .insert(uid.clone());
            }
        }

        let being_deleted = meta.deletion_timestamp.is_some();
        let deleting_dependents = being_deleted && has_finalizer(meta, FOREGROUND_FINALIZER);
        let orphaning = being_deleted && has_finalizer(meta, ORPHAN_FINALIZER);
        let identity = Identity {
            api_version: resource.api_resource.api_version.clone(),
            kind: resource.api_resource.kind.clone(),
            name: meta.name.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            uid: uid.clone(),
        };
        let node = self
            .nodes
            .entry(uid.clone())
            .or_insert_with(|| Node::new(identity.clone()));
        node.identity = identity;
        node.resource = Some(resource.clone());
        node.observed = true;
        node.owners = new_owners;
        node.being_deleted = being_deleted;
        node.deleting_dependents = deleting_dependents;
        node.orphaning = orphaning;

        // Level-triggered: whatever the object's state asks for, every time.
        if orphaning {
            work.attempt_to_orphan.push(uid.clone());
        }
        if deleting_dependents {
            work.attempt_to_delete.push(uid.clone());
            let mut dependents: Vec<Uid> = node.dependents.iter().cloned().collect();
            dependents.sort();
            work.attempt_to_delete.extend(dependents);
        }
        if !being_deleted {
            let node = &self.nodes[&uid];
            let unsettled = node.owners.iter().any(|owner| {
                self.owner_state(owner, node.identity.namespace.as_deref()) != OwnerState::Solid
            });
            if unsettled {
                work.attempt_to_delete.push(uid);
            }
        }
        work
    }

    /// Records that an object is gone.
    pub fn delete(&mut self, meta: &ObjectMeta) -> Work {
        let mut work = Work::default();
        let Some(uid) = meta.uid.as_deref() else {
            return work;
        };
        let owners = match self.nodes.get(uid) {
            Some(node) if node.observed => node.owners.clone(),
            _ => return work,
        };
        for owner in &owners {
            self.remove_dependent(&owner.uid, uid, &mut work);
        }
        let node = self.nodes.get_mut(uid).expect("checked above");
        let mut dependents: Vec<Uid> = node.dependents.iter().cloned().collect();
        dependents.sort();
        if dependents.is_empty() {
            self.nodes.remove(uid);
        } else {
            // Its dependents still name it: keep it as a virtual node for them.
            node.observed = false;
            node.resource = None;
            node.owners.clear();
            node.being_deleted = false;
            node.deleting_dependents = false;
            node.orphaning = false;
        }
        work.attempt_to_delete.extend(dependents);
        work
    }

    /// Drops `dependent` from `owner`'s dependents; wakes the owner if it waits
    /// for them, and forgets it if it was virtual and has none left.
    fn remove_dependent(&mut self, owner: &str, dependent: &str, work: &mut Work) {
        let Some(node) = self.nodes.get_mut(owner) else {
            return;
        };
        node.dependents.remove(dependent);
        if !node.observed && node.dependents.is_empty() {
            self.nodes.remove(owner);
            return;
        }
        self.wake_waiting_owner(owner, work);
    }

    fn wake_waiting_owner(&self, owner: &str, work: &mut Work) {
        if self.nodes.get(owner).is_some_and(|n| n.deleting_dependents) {
            work.attempt_to_delete.push(owner.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ApiResource;

    fn configmaps() -> Arc<ResourceType> {
        Arc::new(ResourceType {
            api_resource: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                plural: "configmaps".into(),
            },
            namespaced: true,
            verbs: vec!["delete".into(), "list".into(), "watch".into()],
        })
    }

    fn reference(uid: &str, name: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: name.into(),
            uid: uid.into(),
            block_owner_deletion: block.then_some(true),
            controller: None,
        }
    }

    fn meta(uid: &str, name: &str, owners: Vec<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            name: Some(name.into()),
            namespace: Some("default".into()),
            owner_references: (!owners.is_empty()).then_some(owners),
            ..Default::default()
        }
    }

    fn deleting(mut meta: ObjectMeta, finalizer: &str) -> ObjectMeta {
        meta.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        meta.finalizers = Some(vec![finalizer.into()]);
        meta
    }

    #[test]
    fn a_dependent_of_an_unseen_owner_is_checked() {
        let mut graph = Graph::new();
        let work = graph.apply(
            &configmaps(),
            &meta("d", "dep", vec![reference("o", "owner", false)]),
        );
        assert_eq!(work.attempt_to_delete, vec!["d".to_string()]);
        let owner = graph.node("o").unwrap();
        assert!(!owner.observed);
        assert!(owner.dependents.contains("d"));
        assert_eq!(
            graph.owner_state(&reference("o", "owner", false), Some("default")),
            OwnerState::Unknown
        );
    }

    #[test]
    fn a_dependent_of_a_seen_owner_is_settled_until_the_owner_goes() {
        let mut graph = Graph::new();
        assert_eq!(
            graph.apply(&configmaps(), &meta("o", "owner", vec![])),
            Work::default()
        );
        let work = graph.apply(
            &configmaps(),
            &meta("d", "dep", vec![reference("o", "owner", false)]),
        );
        assert_eq!(work, Work::default());
        assert_eq!(
            graph.owner_state(&reference("o", "owner", false), Some("default")),
            OwnerState::Solid
        );
        // A reference with another name is not trusted to the graph.
        assert_eq!(
            graph.owner_state(&reference("o", "other", false), Some("default")),
            OwnerState::Unknown
        );
        let work = graph.delete(&meta("o", "owner", vec![]));
        assert_eq!(work.attempt_to_delete, vec!["d".to_string()]);
        // The owner stays as a virtual node while its dependent names it.
        assert!(!graph.node("o").unwrap().observed);
        graph.delete(&meta("d", "dep", vec![reference("o", "owner", false)]));
        assert!(graph.is_empty());
    }

    #[test]
    fn an_orphaning_owner_is_queued_for_orphaning() {
        let mut graph = Graph::new();
        graph.apply(&configmaps(), &meta("o", "owner", vec![]));
        graph.apply(
            &configmaps(),
            &meta("d", "dep", vec![reference("o", "owner", false)]),
        );
        let work = graph.apply(
            &configmaps(),
            &deleting(meta("o", "owner", vec![]), ORPHAN_FINALIZER),
        );
        assert_eq!(work.attempt_to_orphan, vec!["o".to_string()]);
        assert!(work.attempt_to_delete.is_empty());
        assert_eq!(graph.dependents("o").len(), 1);
    }

    #[test]
    fn a_foreground_owner_waits_for_blocking_dependents_only() {
        let mut graph = Graph::new();
        graph.apply(&configmaps(), &meta("o", "owner", vec![]));
        graph.apply(
            &configmaps(),
            &meta("b", "blocking", vec![reference("o", "owner", true)]),
        );
        graph.apply(
            &configmaps(),
            &meta("n", "nonblocking", vec![reference("o", "owner", false)]),
        );
        let work = graph.apply(
            &configmaps(),
            &deleting(meta("o", "owner", vec![]), FOREGROUND_FINALIZER),
        );
        assert_eq!(
            work.attempt_to_delete,
            vec!["o".to_string(), "b".to_string(), "n".to_string()]
        );
        let blocking: Vec<&str> = graph
            .blocking_dependents("o")
            .iter()
            .map(|n| n.identity.uid.as_str())
            .collect();
        assert_eq!(blocking, vec!["b"]);
        assert_eq!(
            graph.owner_state(&reference("o", "owner", true), Some("default")),
            OwnerState::WaitingForDependents
        );
        // The blocking dependent goes: the owner is woken.
        let work = graph.delete(&meta("b", "blocking", vec![reference("o", "owner", true)]));
        assert_eq!(work.attempt_to_delete, vec!["o".to_string()]);
        assert!(graph.blocking_dependents("o").is_empty());
    }

    #[test]
    fn unblocking_a_reference_wakes_the_waiting_owner() {
        let mut graph = Graph::new();
        graph.apply(
            &configmaps(),
            &deleting(meta("o", "owner", vec![]), FOREGROUND_FINALIZER),
        );
        graph.apply(
            &configmaps(),
            &meta("b", "blocking", vec![reference("o", "owner", true)]),
        );
        let work = graph.apply(
            &configmaps(),
            &meta("b", "blocking", vec![reference("o", "owner", false)]),
        );
        assert!(work.attempt_to_delete.contains(&"o".to_string()));
        let work = graph.apply(&configmaps(), &meta("b", "blocking", vec![]));
        assert_eq!(work.attempt_to_delete, vec!["o".to_string()]);
        assert!(graph.dependents("o").is_empty());
    }

    #[test]
    fn group_of_api_versions() {
        assert_eq!(group_of("v1"), "");
        assert_eq!(group_of("apps/v1"), "apps");
    }
}
