//! The DaemonSet controller (upstream's `pkg/controller/daemon`): one pod on every
//! node that should run it.
//!
//! - Which nodes: those matching the template's `nodeSelector` and required node
//!   affinity whose `NoSchedule`/`NoExecute` taints the pod tolerates (a node that
//!   only gained a `NoSchedule` taint keeps its pod). Pods get upstream's default
//!   tolerations (`not-ready`, `unreachable`, `disk-pressure`, `memory-pressure`,
//!   `pid-pressure`, `unschedulable`, and `network-unavailable` on the host network).
//! - Pods are created without a node name and with a required node affinity to their
//!   node (`matchFields` `metadata.name`), for the scheduler to bind. A node that
//!   appears gets a pod, a node that goes (or stops matching) loses it; failed pods
//!   are deleted and replaced; extra pods on one node are deleted.
//! - Updates: every template is a ControllerRevision; pods carry its hash in
//!   `controller-revision-hash`. `RollingUpdate` replaces old pods within
//!   `maxUnavailable` (or, with `maxSurge`, starts the new pod beside the old one and
//!   deletes the old one once the new one is available); `OnDelete` waits for
//!   deletions.
//!
//! Pods are the set's by controller owner reference; orphans matching its selector
//! are adopted, owned pods that stop matching are released.
//!
//! Not done: the slow-start batching of pod creations (one call at a time).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};

use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::workload::{
    Events, Expectations, REVISION_HASH_LABEL, RevisionOutcome, adopters, claim_pods,
    controller_key, controller_uid, ensure_revision, generate_name, is_pod_ready,
    is_pod_terminating, pod_from_template, pod_phase, to_chrono,
};
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// The deprecated label with the DaemonSet's generation that upstream still sets.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// Runs the DaemonSet controller until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(DaemonSetController {
        client: caches.client().clone(),
        sets: caches.get::<DaemonSet>(),
        pods: caches.get::<Pod>(),
        nodes: caches.get::<Node>(),
        revisions: caches.get::<ControllerRevision>(),
        expectations: Expectations::default(),
        events: Events::new(caches.client().clone(), "daemonset-controller"),
    });
    let queue = WorkQueue::new();
    {
        let (controller, queue) = (controller.clone(), queue.clone());
        tokio::spawn(async move {
            let mut changes = controller.sets.subscribe();
            while let Some(change) = changes.recv().await {
                let key = ObjectKey::of(change.object().as_ref());
                if let Change::Deleted(_) = change {
                    controller.expectations.forget(&key);
                }
                queue.add(key);
            }
        });
    }
    {
        let (controller, queue) = (controller.clone(), queue.clone());
        tokio::spawn(async move {
            let mut changes = controller.pods.subscribe();
            while let Some(change) = changes.recv().await {
                let pod = change.object();
                let Some(owner) = controller_key(&pod.metadata, "DaemonSet") else {
                    let sets = controller
                        .sets
                        .list_namespace(&pod.namespace().unwrap_or_default());
                    let selector = |set: &DaemonSet| {
                        serde_json::to_value(set.spec.as_ref().map(|s| &s.selector))
                            .unwrap_or_default()
                    };
                    for adopter in adopters(&sets, pod, selector) {
                        queue.add(adopter);
                    }
                    continue;
                };
                let pod_key = ObjectKey::of(pod.as_ref());
                let gone = matches!(change, Change::Deleted(_)) || is_pod_terminating(pod);
                controller.expectations.observe(&owner, &pod_key, gone);
                queue.add(owner);
            }
        });
    }
    {
        // Any node change may concern every DaemonSet.
        let (controller, queue) = (controller.clone(), queue.clone());
        tokio::spawn(async move {
            let mut changes = controller.nodes.subscribe();
            while changes.recv().await.is_some() {
                for set in controller.sets.list() {
                    queue.add(ObjectKey::of(set.as_ref()));
                }
            }
        });
    }
    controller.sets.wait_synced().await;
    controller.pods.wait_synced().await;
    controller.nodes.wait_synced().await;
    controller.revisions.wait_synced().await;
    run_workers("daemonset", queue, 4, |key| controller.clone().sync(key)).await;
    Ok(())
}

struct DaemonSetController {
    client: Client,
    sets: Arc<Cache<DaemonSet>>,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<Node>>,
    revisions: Arc<Cache<ControllerRevision>>,
    expectations: Expectations,
    events: Events,
}

/// Whether a DaemonSet's pod should be created on a node, and whether one already
/// there may stay (upstream's `NodeShouldRunDaemonPod`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub should_run: bool,
    pub should_continue_running: bool,
}

/// Where a pod made from `spec` (with the default tolerations) belongs on `node`.
pub fn placement(node: &Node, spec: &PodSpec) -> Placement {
    let no = Placement {
        should_run: false,
        should_continue_running: false,
    };
    let labels = node.labels();
    let selected = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if !selected || required.is_some_and(|selector| !node_selector_matches(selector, node)) {
        return no;
    }
    let tolerations = with_default_tolerations(spec.tolerations.clone().unwrap_or_default(), spec);
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .filter(|t| t.effect == effect)
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    let execute_blocked = untolerated("NoExecute");
    Placement {
        should_run: !execute_blocked && !untolerated("NoSchedule"),
        should_continue_running: !execute_blocked,
    }
}

/// Whether `node` matches a required node selector: any term, all of its parts.
pub fn node_selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    selector.node_selector_terms.iter().any(|term| {
        let expressions = term.match_expressions.as_deref().unwrap_or(&[]);
        let fields = term.match_fields.as_deref().unwrap_or(&[]);
        if expressions.is_empty() && fields.is_empty() {
            return false;
        }
        let labels = node.labels();
        expressions
            .iter()
            .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                let value = (r.key == "metadata.name").then(|| node.name_any());
                requirement_matches(r, value.as_deref())
            })
    })
}

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or(&[]);
    let number = |text: &str| text.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|v| number(v)),
            ) else {
                return false;
            };
            if requirement.operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|effect| effect.is_empty() || effect == taint.effect);
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    let key = toleration.key.as_deref().unwrap_or("");
    if !effect_ok {
        return false;
    }
    if key.is_empty() {
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        _ => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

/// `tolerations` plus the ones upstream gives every DaemonSet pod (unless present).
pub fn with_default_tolerations(
    mut tolerations: Vec<Toleration>,
    spec: &PodSpec,
) -> Vec<Toleration> {
    let mut defaults = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        defaults.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    for (key, effect) in defaults {
        let present = tolerations.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some(effect)
                && t.operator.as_deref() == Some("Exists")
        });
        if !present {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                value: None,
                toleration_seconds: None,
            });
        }
    }
    tolerations
}

/// The node a DaemonSet pod is on, or is meant for by its node affinity.
pub fn pod_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// The pod spec pinned to `node` by a required node affinity on `metadata.name`, the
/// template's other required terms replaced, its preferred terms kept.
fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    });
}

/// An `IntOrString` budget against `total`, rounding up as upstream does.
pub fn resolve_budget(value: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(text)) => {
            let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(0);
            ((percent * i64::from(total) + 99) / 100) as i32
        }
    }
}

/// One node's pods, as the rolling update sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePods {
    pub node: String,
    /// Old-revision pods: (name, available).
    pub old: Vec<(String, bool)>,
    /// Update-revision pods: (name, available).
    pub new: Vec<(String, bool)>,
}

/// What a rolling update does in one pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpdateStep {
    /// Old pods to delete.
    pub delete: Vec<String>,
    /// Nodes to start a new pod on beside the old one (surge).
    pub surge: Vec<String>,
}

/// Decides a rolling update pass over the nodes that should run the pod.
pub fn rolling_update(nodes: &[NodePods], max_surge: i32, max_unavailable: i32) -> UpdateStep {
    let mut step = UpdateStep::default();
    if max_surge > 0 {
        let mut surging = nodes
            .iter()
            .filter(|n| !n.old.is_empty() && !n.new.is_empty())
            .count() as i32;
        for node in nodes.iter().filter(|n| !n.old.is_empty()) {
            let new_available = node.new.iter().any(|(_, available)| *available);
            if new_available {
                step.delete
                    .extend(node.old.iter().map(|(name, _)| name.clone()));
            } else if node.new.is_empty() {
                if node.old.iter().all(|(_, available)| !available) {
                    // Nothing available to protect: replace it at once.
                    step.delete
                        .extend(node.old.iter().map(|(name, _)| name.clone()));
                } else if surging < max_surge {
                    surging += 1;
                    step.surge.push(node.node.clone());
                }
            }
        }
        return step;
    }
    let max_unavailable = max_unavailable.max(1);
    let mut unavailable = nodes
        .iter()
        .filter(|n| {
            !n.old
                .iter()
                .chain(n.new.iter())
                .any(|(_, available)| *available)
        })
        .count() as i32;
    for node in nodes
        .iter()
        .filter(|n| !n.old.is_empty() && n.new.is_empty())
    {
        let available = node.old.iter().any(|(_, available)| *available);
        if !available {
            // Already unavailable: replacing it costs nothing.
            step.delete
                .extend(node.old.iter().map(|(name, _)| name.clone()));
        } else if unavailable < max_unavailable {
            unavailable += 1;
            step.delete
                .extend(node.old.iter().map(|(name, _)| name.clone()));
        }
    }
    step
}

impl DaemonSetController {
    async fn sync(self: Arc<Self>, key: ObjectKey) -> anyhow::Result<Outcome> {
        let Some(set) = self.sets.get(&key.namespace, &key.name) else {
            return Ok(Outcome::Done);
        };
        if set.metadata.deletion_timestamp.is_some() || !self.expectations.satisfied(&key) {
            return Ok(Outcome::Done);
        }
        let uid = set.uid().unwrap_or_default();
        let spec = set.spec.clone().unwrap_or_default();
        let mut status = set.status.clone().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let sets_api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &key.namespace);
        let revisions_api: Api<ControllerRevision> =
            Api::namespaced(self.client.clone(), &key.namespace);

        // The update revision and its hash.
        let owned_revisions: Vec<Arc<ControllerRevision>> = self
            .revisions
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|r| controller_uid(&r.metadata, "DaemonSet") == Some(uid.as_str()))
            .collect();
        let collision_count = status.collision_count.unwrap_or(0);
        let data = crate::workload::template_revision_data(&spec.template);
        let labels = spec.selector.match_labels.clone().unwrap_or_default();
        let revision = match ensure_revision(
            &revisions_api,
            set.as_ref(),
            &owned_revisions,
            data,
            labels,
            collision_count,
        )
        .await?
        {
            RevisionOutcome::Revision(revision) => revision,
            RevisionOutcome::Collision => {
                status.collision_count = Some(collision_count + 1);
                let mut updated = (*set).clone();
                updated.status = Some(status);
                sets_api
                    .replace_status(&key.name, &PostParams::default(), &updated)
                    .await?;
                return Ok(Outcome::Done);
            }
        };
        let hash = revision
            .labels()
            .get(REVISION_HASH_LABEL)
            .cloned()
            .unwrap_or_default();
        self.prune_revisions(
            &revisions_api,
            &spec,
            &owned_revisions,
            &revision.name_any(),
        )
        .await?;

        let nodes: Vec<Arc<Node>> = self.nodes.list();
        let node_names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        let mut victims: Vec<(Arc<Pod>, &'static str)> = Vec::new();
        let selector = serde_json::to_value(&spec.selector)?;
        let candidates = self.pods.list_namespace(&key.namespace);
        let claimed = claim_pods(
            &self.client,
            set.as_ref(),
            &selector,
            candidates,
            |_| true,
            None,
        )
        .await?;
        for pod in claimed.into_iter().filter(|pod| !is_pod_terminating(pod)) {
            match pod_node(&pod) {
                Some(node) if node_names.contains(&node) => {
                    by_node.entry(node).or_default().push(pod)
                }
                _ => victims.push((pod, "its node is gone")),
            }
        }

        let template_spec = spec.template.spec.clone().unwrap_or_default();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = Utc::now();
        let mut wake: Option<Duration> = None;
        let mut available = |pod: &Pod| -> bool {
            if pod_phase(pod) != "Running" || !is_pod_ready(pod) {
                return false;
            }
            let since = ready_since(pod).unwrap_or(now);
            let ready_for = (now - since).num_seconds();
            if ready_for < i64::from(min_ready) {
                let left = Duration::from_secs((i64::from(min_ready) - ready_for).max(1) as u64);
                wake = Some(wake.map_or(left, |w| w.min(left)));
                return false;
            }
            true
        };
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let rolling = strategy.type_.as_deref() != Some("OnDelete");
        let rolling_update_spec = strategy.rolling_update.clone().unwrap_or_default();
        let mut create_on: Vec<String> = Vec::new();
        let mut update_nodes: Vec<NodePods> = Vec::new();
        let (
            mut desired,
            mut scheduled,
            mut misscheduled,
            mut ready,
            mut updated,
            mut available_count,
        ) = (0, 0, 0, 0, 0, 0);
        let mut sorted_nodes = nodes.clone();
        sorted_nodes.sort_by_key(|n| n.name_any());
        for node in &sorted_nodes {
            let name = node.name_any();
            let placement = placement(node, &template_spec);
            let mut pods = by_node.remove(&name).unwrap_or_default();
            // Failed pods are replaced.
            pods.retain(|pod| {
                if pod_phase(pod) == "Failed" {
                    victims.push((pod.clone(), "it failed"));
                    return false;
                }
                true
            });
            if placement.should_run {
                desired += 1;
            }
            if !pods.is_empty() {
                if placement.should_run {
                    scheduled += 1;
                } else {
                    misscheduled += 1;
                }
            }
            if !placement.should_continue_running {
                victims.extend(pods.into_iter().map(|pod| (pod, "the node does not match")));
                continue;
            }
            if !placement.should_run && pods.is_empty() {
                continue;
            }
            if placement.should_run && pods.is_empty() {
                // A node still without its pod counts as unavailable for the update.
                update_nodes.push(NodePods {
                    node: name.clone(),
                    old: Vec::new(),
                    new: Vec::new(),
                });
                create_on.push(name);
                continue;
            }
            // At most one old and one new pod: the oldest of each is kept.
            pods.sort_by_key(|pod| {
                (
                    pod.metadata.creation_timestamp.as_ref().map(to_chrono),
                    pod.name_any(),
                )
            });
            let is_new = |pod: &Pod| pod.labels().get(REVISION_HASH_LABEL) == Some(&hash);
            let (new, old): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) =
                pods.into_iter().partition(|pod| is_new(pod));
            let surge = rolling && resolve_budget(rolling_update_spec.max_surge.as_ref(), 1, 0) > 0;
            let keep_old = if new.is_empty() || surge { 1 } else { 0 };
            for pod in new.iter().skip(1).chain(old.iter().skip(keep_old)) {
                victims.push((pod.clone(), "there are too many on the node"));
            }
            let new: Vec<Arc<Pod>> = new.into_iter().take(1).collect();
            let old: Vec<Arc<Pod>> = old.into_iter().take(keep_old).collect();
            if let Some(pod) = new.first() {
                updated += 1;
                if is_pod_ready(pod) {
                    ready += 1;
                }
                if available(pod) {
                    available_count += 1;
                }
            } else if let Some(pod) = old.first() {
                if is_pod_ready(pod) {
                    ready += 1;
                }
                if available(pod) {
                    available_count += 1;
                }
            }
            update_nodes.push(NodePods {
                node: name,
                old: old.iter().map(|p| (p.name_any(), available(p))).collect(),
                new: new.iter().map(|p| (p.name_any(), available(p))).collect(),
            });
        }

        if rolling {
            let max_surge = resolve_budget(rolling_update_spec.max_surge.as_ref(), desired, 0);
            let max_unavailable =
                resolve_budget(rolling_update_spec.max_unavailable.as_ref(), desired, 1);
            let step = rolling_update(&update_nodes, max_surge, max_unavailable);
            for name in step.delete {
                if let Some(pod) = self.pods.get(&key.namespace, &name) {
                    victims.push((pod, "it runs an old revision"));
                }
            }
            create_on.extend(step.surge);
        }

        let mut seen = HashSet::new();
        for (pod, why) in victims {
            if seen.insert(pod.name_any()) {
                self.delete_pod(&key, &pods_api, &set, &pod, why).await?;
            }
        }
        for node in &create_on {
            self.create_pod(&key, &pods_api, &set, node, &hash).await?;
        }

        let new_status = DaemonSetStatus {
            collision_count: Some(collision_count),
            conditions: status.conditions.clone(),
            current_number_scheduled: scheduled,
            desired_number_scheduled: desired,
            number_available: Some(available_count),
            number_misscheduled: misscheduled,
            number_ready: ready,
            number_unavailable: Some((desired - available_count).max(0)),
            observed_generation: set.metadata.generation,
            updated_number_scheduled: Some(updated),
        };
        if set.status.as_ref() != Some(&new_status) {
            let mut changed = (*set).clone();
            changed.status = Some(new_status);
            sets_api
                .replace_status(&key.name, &PostParams::default(), &changed)
                .await
                .context("cannot update the daemonset status")?;
        }
        Ok(wake.map_or(Outcome::Done, Outcome::RequeueAfter))
    }

    async fn create_pod(
        &self,
        key: &ObjectKey,
        pods_api: &Api<Pod>,
        set: &DaemonSet,
        node: &str,
        hash: &str,
    ) -> anyhow::Result<()> {
        let spec = set.spec.clone().unwrap_or_default();
        let generation = set.metadata.generation.unwrap_or(0).to_string();
        let labels = [
            (REVISION_HASH_LABEL, hash.to_string()),
            (TEMPLATE_GENERATION_LABEL, generation),
        ];
        let mut pod = pod_from_template(set, &spec.template, &labels);
        pod.metadata.name = Some(generate_name(&format!("{}-", set.name_any())));
        let pod_spec = pod.spec.get_or_insert_with(Default::default);
        pin_to_node(pod_spec, node);
        pod_spec.tolerations = Some(with_default_tolerations(
            pod_spec.tolerations.clone().unwrap_or_default(),
            pod_spec,
        ));
        let pod_key = ObjectKey::new(key.namespace.clone(), pod.name_any());
        self.expectations.expect_creation(key, pod_key.clone());
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                let message = format!("Created pod: {}", created.name_any());
                self.events.normal(set, "SuccessfulCreate", message).await;
                Ok(())
            }
            Err(error) => {
                self.expectations.observe(key, &pod_key, true);
                let message = format!("Error creating: {error}");
                self.events.warning(set, "FailedCreate", message).await;
                Err(error).context("cannot create a daemon pod")
            }
        }
    }

    async fn delete_pod(
        &self,
        key: &ObjectKey,
        pods_api: &Api<Pod>,
        set: &DaemonSet,
        pod: &Pod,
        why: &str,
    ) -> anyhow::Result<()> {
        if pod_phase(pod) == "Failed" {
            let message = format!(
                "Found failed daemon pod {}/{} on node {}, will try to kill it",
                pod.namespace().unwrap_or_default(),
                pod.name_any(),
                pod_node(pod).unwrap_or_default()
            );
            self.events.warning(set, "FailedDaemonPod", message).await;
        }
        let pod_key = ObjectKey::of(pod);
        self.expectations.expect_deletion(key, pod_key.clone());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods_api.delete(&pod.name_any(), &params).await {
            Ok(_) => {
                tracing::debug!(pod = %pod.name_any(), "deleting a daemon pod: {why}");
                let message = format!("Deleted pod: {}", pod.name_any());
                self.events.normal(set, "SuccessfulDelete", message).await;
                Ok(())
            }
            Err(kube::Error::Api(error)) if error.code == 404 || error.code == 409 => {
                self.expectations.observe(key, &pod_key, true);
                Ok(())
            }
            Err(error) => {
                self.expectations.observe(key, &pod_key, true);
                Err(error).context("cannot delete a daemon pod")
            }
        }
    }

    /// Deletes the oldest revisions beyond `revisionHistoryLimit` that no pod uses.
    async fn prune_revisions(
        &self,
        api: &Api<ControllerRevision>,
        spec: &k8s_openapi::api::apps::v1::DaemonSetSpec,
        revisions: &[Arc<ControllerRevision>],
        update: &str,
    ) -> anyhow::Result<()> {
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let hashes_in_use: HashSet<String> = self
            .pods
            .list()
            .iter()
            .filter_map(|p| p.labels().get(REVISION_HASH_LABEL).cloned())
            .collect();
        let mut history: BTreeMap<i64, &Arc<ControllerRevision>> = BTreeMap::new();
        for revision in revisions {
            let hash = revision
                .labels()
                .get(REVISION_HASH_LABEL)
                .cloned()
                .unwrap_or_default();
            if revision.name_any() != update && !hashes_in_use.contains(&hash) {
                history.insert(revision.revision, revision);
            }
        }
        let excess = history.len().saturating_sub(limit);
        for revision in history.values().take(excess) {
            match api
                .delete(&revision.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(error)) if error.code == 404 => {}
                Err(error) => {
                    return Err(error).context("cannot delete an old controller revision");
                }
            }
        }
        Ok(())
    }
}

fn ready_since(pod: &Pod) -> Option<chrono::DateTime<Utc>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(to_chrono)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": labels},
            "spec": {"taints": taints},
        }))
        .unwrap()
    }

    fn spec(value: serde_json::Value) -> PodSpec {
        let mut value = value;
        value["containers"] = json!([{"name": "c"}]);
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn node_selectors_and_affinity_choose_nodes() {
        let worker = node(json!({"role": "worker", "size": "8"}), json!([]));
        assert!(placement(&worker, &spec(json!({}))).should_run);
        assert!(placement(&worker, &spec(json!({"nodeSelector": {"role": "worker"}}))).should_run);
        assert!(!placement(&worker, &spec(json!({"nodeSelector": {"role": "db"}}))).should_run);
        let affinity = |operator: &str, values: serde_json::Value| {
            spec(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "size", "operator": operator, "values": values}]}],
                }}}}),
            )
        };
        assert!(placement(&worker, &affinity("Gt", json!(["4"]))).should_run);
        assert!(!placement(&worker, &affinity("Lt", json!(["4"]))).should_run);
        assert!(placement(&worker, &affinity("In", json!(["8", "16"]))).should_run);
        assert!(!placement(&worker, &affinity("NotIn", json!(["8"]))).should_run);
        assert!(placement(&worker, &affinity("Exists", json!([]))).should_run);
        let by_name = spec(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}],
            }}}}),
        );
        assert!(!placement(&worker, &by_name).should_run);
    }

    #[test]
    fn taints_keep_pods_away_unless_tolerated() {
        let tainted = node(
            json!({}),
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        );
        let plain = placement(&tainted, &spec(json!({})));
        assert!(!plain.should_run);
        assert!(plain.should_continue_running, "NoSchedule does not evict");
        let tolerant = spec(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}),
        );
        assert!(placement(&tainted, &tolerant).should_run);
        let evicting = node(
            json!({}),
            json!([{"key": "dedicated", "effect": "NoExecute"}]),
        );
        assert!(!placement(&evicting, &spec(json!({}))).should_continue_running);
        // The default tolerations: an unschedulable or not-ready node still runs them.
        let cordoned = node(
            json!({}),
            json!([
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
            ]),
        );
        assert!(placement(&cordoned, &spec(json!({}))).should_run);
        let everything = Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        };
        assert!(tolerates(
            &everything,
            &Taint {
                key: "x".into(),
                effect: "NoExecute".into(),
                ..Taint::default()
            }
        ));
    }

    #[test]
    fn default_tolerations_are_added_once() {
        let tolerations = with_default_tolerations(Vec::new(), &spec(json!({})));
        assert_eq!(tolerations.len(), 6);
        assert_eq!(
            with_default_tolerations(tolerations.clone(), &spec(json!({}))).len(),
            6
        );
        let host = with_default_tolerations(Vec::new(), &spec(json!({"hostNetwork": true})));
        assert!(
            host.iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable"))
        );
    }

    #[test]
    fn a_pinned_pod_names_its_node() {
        let mut pod_spec = spec(json!({"affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}],
        }}}));
        pin_to_node(&mut pod_spec, "n7");
        let pod = Pod {
            spec: Some(pod_spec.clone()),
            ..Pod::default()
        };
        assert_eq!(pod_node(&pod).as_deref(), Some("n7"));
        let node_affinity = pod_spec.affinity.unwrap().node_affinity.unwrap();
        assert!(
            node_affinity
                .preferred_during_scheduling_ignored_during_execution
                .is_some()
        );
    }

    #[test]
    fn budgets_resolve_percentages_rounding_up() {
        assert_eq!(resolve_budget(None, 10, 1), 1);
        assert_eq!(resolve_budget(Some(&IntOrString::Int(2)), 10, 1), 2);
        assert_eq!(
            resolve_budget(Some(&IntOrString::String("25%".into())), 10, 1),
            3
        );
        assert_eq!(
            resolve_budget(Some(&IntOrString::String("0%".into())), 10, 1),
            0
        );
    }

    fn nodes(old_available: &[bool]) -> Vec<NodePods> {
        old_available
            .iter()
            .enumerate()
            .map(|(i, available)| NodePods {
                node: format!("n{i}"),
                old: vec![(format!("old-{i}"), *available)],
                new: vec![],
            })
            .collect()
    }

    #[test]
    fn rolling_updates_stay_within_max_unavailable() {
        let step = rolling_update(&nodes(&[true, true, true]), 0, 1);
        assert_eq!(step.delete, ["old-0"]);
        // An unavailable old pod is replaced at once; it already uses the budget.
        let step = rolling_update(&nodes(&[false, true, true]), 0, 1);
        assert_eq!(step.delete, ["old-0"]);
        let step = rolling_update(&nodes(&[false, true, true]), 0, 2);
        assert_eq!(step.delete, ["old-0", "old-1"]);
        // A node without its pod yet uses the budget up.
        let mut missing = nodes(&[true, true]);
        missing.push(NodePods {
            node: "n8".into(),
            old: vec![],
            new: vec![],
        });
        assert!(rolling_update(&missing, 0, 1).delete.is_empty());
        // A node already without an available pod uses the budget up.
        let mut busy = nodes(&[true, true]);
        busy.push(NodePods {
            node: "n9".into(),
            old: vec![],
            new: vec![("new-9".into(), false)],
        });
        assert!(rolling_update(&busy, 0, 1).delete.is_empty());
        assert_eq!(
            rolling_update(&nodes(&[true, true, true]), 0, 2)
                .delete
                .len(),
            2
        );
    }

    #[test]
    fn surge_starts_new_pods_first_and_removes_old_ones_once_new_are_available() {
        let step = rolling_update(&nodes(&[true, true]), 1, 0);
        assert_eq!(
            step,
            UpdateStep {
                delete: vec![],
                surge: vec!["n0".into()]
            }
        );
        let mut surging = nodes(&[true, true]);
        surging[0].new = vec![("new-0".into(), false)];
        assert!(
            rolling_update(&surging, 1, 0) == UpdateStep::default(),
            "waits for new-0"
        );
        surging[0].new = vec![("new-0".into(), true)];
        let step = rolling_update(&surging, 1, 0);
        assert_eq!(step.delete, ["old-0"]);
    }
}
