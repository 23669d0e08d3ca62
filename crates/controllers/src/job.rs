//! The Job controller (upstream's `pkg/controller/job`): runs a Job's pods to
//! completion.
//!
//! - `completions` and `parallelism`: how many pods must succeed, and how many run at
//!   once; `completionMode: Indexed` gives each pod an index (label, annotation,
//!   `JOB_COMPLETION_INDEX`, hostname `<job>-<index>`) and tracks `completedIndexes`.
//! - Failures: `backoffLimit` failed pods (plus restarts under `OnFailure`) fail the
//!   Job (`BackoffLimitExceeded`); replacements wait an exponential backoff (10 s
//!   doubling, at most 10 min) after the last failure. `podFailurePolicy` rules
//!   (`FailJob`, `Ignore`, `Count`) are matched on exit codes and pod conditions.
//! - `activeDeadlineSeconds` (`DeadlineExceeded`), `suspend` (pods deleted, the
//!   `Suspended` condition), `ttlSecondsAfterFinished` (the finished Job is deleted
//!   with its pods, the work of upstream's TTL-after-finished controller).
//!
//! Pods carry the `batch.kubernetes.io/job-tracking` finalizer until they are counted,
//! and are counted crash-safely as upstream does: a finished pod's uid goes into
//! `status.uncountedTerminatedPods` first, then the finalizer is removed, then the uid
//! moves into the `succeeded`/`failed` counters. Finishing takes two steps too: an
//! interim condition (`SuccessCriteriaMet` or `FailureTarget`) while the remaining
//! pods are removed, then `Complete` or `Failed`.
//!
//! Pods are the Job's by controller owner reference; orphans that match its
//! selector (by default `batch.kubernetes.io/controller-uid=<uid>`) are adopted and
//! owned pods that stop matching are released.
//!
//! Not done: `backoffLimitPerIndex`/`maxFailedIndexes` (and the `FailIndex` action),
//! and `successPolicy`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobStatus, PodFailurePolicy, PodFailurePolicyRule, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::workload::{
    Events, Expectations, adopters, claim_pods, controller_key, controller_uid, generate_name,
    is_pod_finished, is_pod_ready, is_pod_terminating, pod_from_template, pod_phase, to_chrono,
    to_time,
};
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// The finalizer that keeps a Job's pod until the Job counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Label and annotation: the completion index of a pod of an Indexed Job.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// On the pods of a Job with backoffLimitPerIndex: how often their index failed before.
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// Labels every pod of a Job carries (and their legacy, unprefixed twins).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The first delay before a failed pod is replaced.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest delay before a failed pod is replaced.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10 * 60);
/// The most pods one sync creates.
const MAX_CREATIONS_PER_SYNC: usize = 500;

/// Runs the Job controller until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(JobController {
        client: caches.client().clone(),
        jobs: caches.get::<Job>(),
        pods: caches.get::<Pod>(),
        expectations: Expectations::default(),
        events: Events::new(caches.client().clone(), "job-controller"),
    });
    let queue = WorkQueue::new();
    tokio::spawn(feed_jobs(controller.clone(), queue.clone()));
    tokio::spawn(feed_pods(controller.clone(), queue.clone()));
    controller.jobs.wait_synced().await;
    controller.pods.wait_synced().await;
    run_workers("job", queue, 4, |key| controller.clone().sync(key)).await;
    Ok(())
}

async fn feed_jobs(controller: Arc<JobController>, queue: WorkQueue<ObjectKey>) {
    let mut changes = controller.jobs.subscribe();
    while let Some(change) = changes.recv().await {
        let key = ObjectKey::of(change.object().as_ref());
        if let Change::Deleted(_) = change {
            controller.expectations.forget(&key);
        }
        queue.add(key);
    }
}

async fn feed_pods(controller: Arc<JobController>, queue: WorkQueue<ObjectKey>) {
    let mut changes = controller.pods.subscribe();
    while let Some(change) = changes.recv().await {
        let pod = change.object();
        let Some(job) = controller_key(&pod.metadata, "Job") else {
            let jobs = controller
                .jobs
                .list_namespace(&pod.namespace().unwrap_or_default());
            for adopter in adopters(&jobs, pod, job_selector) {
                queue.add(adopter);
            }
            continue;
        };
        let pod_key = ObjectKey::of(pod.as_ref());
        match change {
            Change::Deleted(_) => controller.expectations.observe(&job, &pod_key, true),
            Change::Applied(_) if is_pod_terminating(pod) => {
                controller.expectations.observe_terminating(&job, &pod_key)
            }
            Change::Applied(_) => controller.expectations.observe(&job, &pod_key, false),
        }
        queue.add(job);
    }
}

struct JobController {
    client: Client,
    jobs: Arc<Cache<Job>>,
    pods: Arc<Cache<Pod>>,
    expectations: Expectations,
    events: Events,
}

/// How a finished pod is accounted for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Succeeded,
    /// Counted as a failure; `Some(message)` when a `FailJob` rule matched.
    Failed(Option<String>),
    /// Not counted at all (an `Ignore` rule, or a surplus success of an index).
    Ignored,
    /// Counted as a failure that fails its index at once (a `FailIndex` rule).
    FailIndex,
}

impl JobController {
    async fn sync(self: Arc<Self>, key: ObjectKey) -> anyhow::Result<Outcome> {
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let Some(job) = self.jobs.get(&key.namespace, &key.name) else {
            // The Job is gone: its pods need no counting any more.
            for pod in self.pods.list_namespace(&key.namespace) {
                if controller_key(&pod.metadata, "Job").as_ref() == Some(&key) {
                    remove_finalizer(&pods_api, &pod).await?;
                }
            }
            return Ok(Outcome::Done);
        };
        if !self.expectations.satisfied(&key) {
            // A pod event about our own write will bring the key back.
            return Ok(Outcome::Done);
        }
        let uid = job.uid().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|pod| controller_uid(&pod.metadata, "Job") == Some(uid.as_str()))
            .collect();
        let now = Utc::now();
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), &key.namespace);

        if is_finished(&job) {
            for pod in pods.iter().filter(|pod| has_finalizer(pod)) {
                remove_finalizer(&pods_api, pod).await?;
            }
            return self.expire(&jobs_api, &job, now).await;
        }

        let spec = job.spec.clone().unwrap_or_default();
        // Orphans matching the selector are adopted, owned pods that stopped matching
        // released. Without a selector, the one the API server generates upstream.
        let selector = job_selector(&job);
        let candidates = self.pods.list_namespace(&key.namespace);
        let pods = claim_pods(
            &self.client,
            job.as_ref(),
            &selector,
            candidates,
            |_| true,
            Some(TRACKING_FINALIZER),
        )
        .await?;
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let mut job = (*job).clone();
        let mut status = job.status.clone().unwrap_or_default();
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
        // With backoffLimitPerIndex: the indexes that failed for good.
        let per_index_limit = spec.backoff_limit_per_index.filter(|_| indexed);
        let mut failed_indexes = parse_indexes(status.failed_indexes.as_deref().unwrap_or(""));

        // 1. Record newly finished pods as uncounted before their finalizers go.
        let listed: HashSet<String> = uncounted
            .succeeded
            .iter()
            .chain(uncounted.failed.iter())
            .flatten()
            .cloned()
            .collect();
        let mut release: Vec<Arc<Pod>> = Vec::new();
        let mut fail_job_message = None;
        let mut recorded = false;
        for pod in pods.iter().filter(|pod| has_finalizer(pod)) {
            let pod_uid = pod.uid().unwrap_or_default();
            if listed.contains(&pod_uid) {
                release.push(pod.clone());
                continue;
            }
            if !is_pod_finished(pod) && !is_pod_terminating(pod) {
                continue;
            }
            let verdict = verdict(
                pod,
                &spec.pod_failure_policy,
                indexed,
                completions,
                &completed,
            );
            match verdict {
                Verdict::Succeeded => {
                    if let Some(index) = pod_index(pod) {
                        completed.insert(index);
                    }
                    uncounted
                        .succeeded
                        .get_or_insert_with(Vec::new)
                        .push(pod_uid);
                    recorded = true;
                }
                Verdict::Failed(message) => {
                    fail_job_message = fail_job_message.or(message);
                    if let (Some(limit), Some(index)) = (per_index_limit, pod_index(pod))
                        && index_failure_count(pod) + 1 > limit
                    {
                        failed_indexes.insert(index);
                    }
                    uncounted.failed.get_or_insert_with(Vec::new).push(pod_uid);
                    recorded = true;
                }
                Verdict::FailIndex => {
                    if let Some(index) = pod_index(pod) {
                        failed_indexes.insert(index);
                    }
                    uncounted.failed.get_or_insert_with(Vec::new).push(pod_uid);
                    recorded = true;
                }
                Verdict::Ignored => {}
            }
            release.push(pod.clone());
        }
        if recorded || fail_job_message.is_some() {
            status.uncounted_terminated_pods = Some(uncounted.clone());
            if indexed {
                status.completed_indexes = Some(format_indexes(&completed));
            }
            if per_index_limit.is_some() {
                status.failed_indexes = Some(format_indexes(&failed_indexes));
            }
            if let Some(message) = &fail_job_message
                && find_condition(&status, "FailureTarget").is_none()
            {
                set_condition(
                    &mut status,
                    "FailureTarget",
                    "PodFailurePolicy",
                    message,
                    now,
                );
            }
            job.status = Some(status.clone());
            job = jobs_api
                .replace_status(&key.name, &PostParams::default(), &job)
                .await
                .context("cannot record finished pods")?;
            status = job.status.clone().unwrap_or_default();
        }

        // 2. Release the finished pods, 3. and count them.
        for pod in &release {
            remove_finalizer(&pods_api, pod).await?;
        }
        let succeeded_now = uncounted.succeeded.take().unwrap_or_default().len() as i32;
        let failed_now = uncounted.failed.take().unwrap_or_default().len() as i32;
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        status.failed = Some(status.failed.unwrap_or(0) + failed_now);
        status.succeeded = Some(if indexed {
            completed.len() as i32
        } else {
            status.succeeded.unwrap_or(0) + succeeded_now
        });
        if indexed {
            status.completed_indexes = Some(format_indexes(&completed));
        }
        if per_index_limit.is_some() {
            status.failed_indexes = Some(format_indexes(&failed_indexes));
        }

        // 4. Decide what the job needs now.
        let released: HashSet<String> = release.iter().filter_map(|pod| pod.uid()).collect();
        let active: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|pod| !is_pod_finished(pod) && !is_pod_terminating(pod))
            .filter(|pod| !released.contains(&pod.uid().unwrap_or_default()))
            .collect();
        let terminating = pods
            .iter()
            .filter(|pod| is_pod_terminating(pod) && !is_pod_finished(pod))
            .count() as i32;
        let succeeded = status.succeeded.unwrap_or(0);
        let failed = status.failed.unwrap_or(0);
        let restarts: i32 = if pod_restart_policy(&spec) == "OnFailure" {
            active.iter().map(|pod| restart_count(pod)).sum()
        } else {
            0
        };

        let deadline_passed = match (spec.active_deadline_seconds, &status.start_time) {
            (Some(seconds), Some(start)) if !spec.suspend.unwrap_or(false) => {
                now >= to_chrono(start) + chrono::Duration::seconds(seconds)
            }
            _ => false,
        };
        let failure = if let Some(condition) = find_condition(&status, "FailureTarget") {
            Some((
                condition.reason.clone().unwrap_or_default(),
                condition.message.clone().unwrap_or_default(),
            ))
        } else if per_index_limit.is_none() && failed + restarts > spec.backoff_limit.unwrap_or(6) {
            Some((
                "BackoffLimitExceeded".to_string(),
                "Job has reached the specified backoff limit".to_string(),
            ))
        } else if deadline_passed {
            Some((
                "DeadlineExceeded".to_string(),
                "Job was active longer than specified deadline".to_string(),
            ))
        } else if per_index_limit.is_some()
            && spec
                .max_failed_indexes
                .is_some_and(|max| failed_indexes.len() as i32 > max)
        {
            Some((
                "MaxFailedIndexesExceeded".to_string(),
                "Job has exceeded the specified maximal number of failed indexes".to_string(),
            ))
        } else if per_index_limit.is_some()
            && !failed_indexes.is_empty()
            && (completed.len() + failed_indexes.len()) as i32 >= completions.unwrap_or(0)
        {
            Some((
                "FailedIndexes".to_string(),
                "Job has failed indexes".to_string(),
            ))
        } else {
            None
        };
        let policy_met = match indexed {
            true => success_policy_met(&spec, &completed),
            false => None,
        };
        let success = find_condition(&status, "SuccessCriteriaMet").is_some()
            || policy_met.is_some()
            || match completions {
                Some(completions) => succeeded >= completions,
                None => succeeded > 0 && active.is_empty(),
            };
        let (success_reason, success_message) =
            match (&policy_met, find_condition(&status, "SuccessCriteriaMet")) {
                (_, Some(met)) => (
                    met.reason.clone().unwrap_or_default(),
                    met.message.clone().unwrap_or_default(),
                ),
                (Some(message), None) => ("SuccessPolicy".to_string(), message.clone()),
                (None, None) => (
                    "CompletionsReached".to_string(),
                    "Reached expected number of succeeded pods".to_string(),
                ),
            };

        let mut outcome = Outcome::Done;
        let mut active_count = active.len() as i32;
        let mut finished_event = None;
        if let Some((reason, message)) = failure {
            if find_condition(&status, "FailureTarget").is_none() {
                set_condition(&mut status, "FailureTarget", &reason, &message, now);
            }
            self.delete_pods(&key, &job, &pods_api, &active).await?;
            active_count = 0;
            if pods
                .iter()
                .all(|pod| !has_finalizer(pod) || released.contains(&pod.uid().unwrap_or_default()))
            {
                set_condition(&mut status, "Failed", &reason, &message, now);
                finished_event = Some((true, reason, message));
            }
        } else if success {
            if find_condition(&status, "SuccessCriteriaMet").is_none() {
                set_condition(
                    &mut status,
                    "SuccessCriteriaMet",
                    &success_reason,
                    &success_message,
                    now,
                );
            }
            if completions.is_some() {
                self.delete_pods(&key, &job, &pods_api, &active).await?;
                active_count = 0;
            }
            if active_count == 0 {
                set_condition(
                    &mut status,
                    "Complete",
                    &success_reason,
                    &success_message,
                    now,
                );
                status.completion_time = Some(to_time(now));
                finished_event =
                    Some((false, "Completed".to_string(), "Job completed".to_string()));
            }
        } else if spec.suspend.unwrap_or(false) {
            self.delete_pods(&key, &job, &pods_api, &active).await?;
            active_count = 0;
            if find_condition(&status, "Suspended").is_none_or(|c| c.status != "True") {
                set_condition(
                    &mut status,
                    "Suspended",
                    "JobSuspended",
                    "Job suspended",
                    now,
                );
                self.events
                    .normal(&job, "Suspended", "Job suspended".into())
                    .await;
            }
        } else {
            if let Some(condition) = find_condition(&status, "Suspended")
                && condition.status == "True"
            {
                set_condition_status(
                    &mut status,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                );
                // The deadline counts from the resumption.
                status.start_time = Some(to_time(now));
                self.events
                    .normal(&job, "Resumed", "Job resumed".into())
                    .await;
            }
            if status.start_time.is_none() {
                status.start_time = Some(to_time(now));
            }
            // Under podReplacementPolicy Failed a terminating pod still holds its slot.
            let holding = active_count
                + if spec.pod_replacement_policy.as_deref() == Some("Failed") {
                    terminating
                } else {
                    0
                };
            let parallelism = spec.parallelism.unwrap_or(1).max(0);
            let delay = remaining_backoff(&pods, &spec.pod_failure_policy, now);
            if indexed {
                let settled: BTreeSet<i32> = completed.union(&failed_indexes).copied().collect();
                let (excess, wanted) = plan_indexes(
                    completions.unwrap_or(0),
                    parallelism,
                    &settled,
                    &active,
                    holding,
                );
                self.delete_pods(&key, &job, &pods_api, &excess).await?;
                active_count -= excess.len() as i32;
                match delay {
                    Some(delay) if !wanted.is_empty() => outcome = Outcome::RequeueAfter(delay),
                    _ => {
                        for index in wanted {
                            let failures = index_failures(&pods, index);
                            self.create_pod(&key, &job, &pods_api, Some((index, failures)))
                                .await?;
                            active_count += 1;
                        }
                    }
                }
            } else {
                let wanted = match completions {
                    Some(completions) => (completions - succeeded).min(parallelism).max(0),
                    None if succeeded > 0 => holding,
                    None => parallelism,
                };
                if holding > wanted {
                    let excess = pick_excess(&active, (holding - wanted) as usize);
                    self.delete_pods(&key, &job, &pods_api, &excess).await?;
                    active_count -= excess.len() as i32;
                } else if holding < wanted {
                    match delay {
                        Some(delay) => outcome = Outcome::RequeueAfter(delay),
                        None => {
                            let missing = ((wanted - holding) as usize).min(MAX_CREATIONS_PER_SYNC);
                            for _ in 0..missing {
                                self.create_pod(&key, &job, &pods_api, None).await?;
                                active_count += 1;
                            }
                        }
                    }
                }
            }
            if let (Some(seconds), Some(start)) = (spec.active_deadline_seconds, &status.start_time)
            {
                let left = (to_chrono(start) + chrono::Duration::seconds(seconds) - now)
                    .to_std()
                    .unwrap_or_default();
                outcome = earliest(outcome, left);
            }
        }

        status.active = Some(active_count);
        status.ready = Some(active.iter().filter(|pod| is_pod_ready(pod)).count() as i32);
        status.terminating = Some(terminating);
        if job.status.as_ref() != Some(&status) {
            job.status = Some(status);
            job = jobs_api
                .replace_status(&key.name, &PostParams::default(), &job)
                .await
                .context("cannot update the job status")?;
        }
        if let Some((warning, reason, message)) = finished_event {
            if warning {
                self.events.warning(&job, &reason, message).await;
            } else {
                self.events.normal(&job, &reason, message).await;
            }
            return self.expire(&jobs_api, &job, now).await;
        }
        Ok(outcome)
    }

    /// Deletes a finished Job once its `ttlSecondsAfterFinished` passed.
    async fn expire(
        &self,
        jobs: &Api<Job>,
        job: &Job,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Outcome> {
        let Some(ttl) = job
            .spec
            .as_ref()
            .and_then(|spec| spec.ttl_seconds_after_finished)
        else {
            return Ok(Outcome::Done);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Outcome::Done);
        }
        let Some(finished_at) = finish_time(job) else {
            return Ok(Outcome::Done);
        };
        let expires = finished_at + chrono::Duration::seconds(ttl.into());
        if now < expires {
            return Ok(Outcome::RequeueAfter(
                (expires - now).to_std().unwrap_or_default(),
            ));
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(kube::api::Preconditions {
                uid: job.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match jobs.delete(&job.name_any(), &params).await {
            Ok(_) => Ok(Outcome::Done),
            Err(kube::Error::Api(error)) if error.code == 404 => Ok(Outcome::Done),
            Err(error) => Err(error).context("cannot delete the expired job"),
        }
    }

    async fn create_pod(
        &self,
        key: &ObjectKey,
        job: &Job,
        pods: &Api<Pod>,
        indexed: Option<(i32, i32)>,
    ) -> anyhow::Result<()> {
        let spec = job.spec.as_ref().context("the job has no spec")?;
        let index = indexed.map(|(index, _)| index);
        let uid = job.uid().unwrap_or_default();
        let name = job.name_any();
        let mut labels = vec![
            (CONTROLLER_UID_LABEL, uid.clone()),
            ("controller-uid", uid),
            (JOB_NAME_LABEL, name.clone()),
            ("job-name", name.clone()),
        ];
        if let Some(index) = index {
            labels.push((COMPLETION_INDEX, index.to_string()));
        }
        let mut pod = pod_from_template(job, &spec.template, &labels);
        let prefix = match index {
            Some(index) => format!("{name}-{index}-"),
            None => format!("{name}-"),
        };
        pod.metadata.name = Some(generate_name(&prefix));
        pod.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(TRACKING_FINALIZER.to_string());
        if let Some((index, failures)) = indexed {
            let annotations = pod
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            annotations.insert(COMPLETION_INDEX.to_string(), index.to_string());
            if spec.backoff_limit_per_index.is_some() {
                annotations.insert(INDEX_FAILURE_COUNT.to_string(), failures.to_string());
            }
            if let Some(pod_spec) = pod.spec.as_mut() {
                if pod_spec.hostname.is_none() {
                    pod_spec.hostname = Some(format!("{name}-{index}"));
                }
                let env = EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                        }),
                        ..EnvVarSource::default()
                    }),
                };
                let containers = pod_spec
                    .containers
                    .iter_mut()
                    .chain(pod_spec.init_containers.iter_mut().flatten());
                for container in containers {
                    container.env.get_or_insert_with(Vec::new).push(env.clone());
                }
            }
        }
        let pod_key = ObjectKey::new(key.namespace.clone(), pod.name_any());
        self.expectations.expect_creation(key, pod_key.clone());
        match pods.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                self.events
                    .normal(
                        job,
                        "SuccessfulCreate",
                        format!("Created pod: {}", created.name_any()),
                    )
                    .await;
                Ok(())
            }
            Err(error) => {
                self.expectations.observe(key, &pod_key, true);
                let message = format!("Error creating: {error}");
                self.events.warning(job, "FailedCreate", message).await;
                Err(error).context("cannot create a pod")
            }
        }
    }

    /// Deletes `victims` (releasing them first: a pod the controller removes is not
    /// counted as a failure).
    async fn delete_pods(
        &self,
        key: &ObjectKey,
        job: &Job,
        pods: &Api<Pod>,
        victims: &[&Arc<Pod>],
    ) -> anyhow::Result<()> {
        for pod in victims {
            remove_finalizer(pods, pod).await?;
            let pod_key = ObjectKey::of(pod.as_ref());
            self.expectations.expect_deletion(key, pod_key.clone());
            match pods.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    let message = format!("Deleted pod: {}", pod.name_any());
                    self.events.normal(job, "SuccessfulDelete", message).await;
                }
                Err(kube::Error::Api(error)) if error.code == 404 => {
                    self.expectations.observe(key, &pod_key, true);
                }
                Err(error) => {
                    self.expectations.observe(key, &pod_key, true);
                    return Err(error).context("cannot delete a pod");
                }
            }
        }
        Ok(())
    }
}

/// The Job's selector as JSON; without one, the one the API server generates
/// upstream (`batch.kubernetes.io/controller-uid=<uid>`).
fn job_selector(job: &Job) -> serde_json::Value {
    match job.spec.as_ref().and_then(|spec| spec.selector.as_ref()) {
        Some(selector) => serde_json::to_value(selector).unwrap_or_default(),
        None => json!({"matchLabels": {CONTROLLER_UID_LABEL: job.uid().unwrap_or_default()}}),
    }
}

/// Removes the tracking finalizer from `pod` (conditional on the version the cache
/// saw, so a stale view fails and is retried).
async fn remove_finalizer(pods: &Api<Pod>, pod: &Pod) -> anyhow::Result<()> {
    if !has_finalizer(pod) {
        return Ok(());
    }
    let finalizers: Vec<&String> = pod
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != TRACKING_FINALIZER)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": pod.resource_version(),
    }});
    match pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(error)) if error.code == 404 => Ok(()),
        Err(error) => Err(error).context("cannot remove the job tracking finalizer"),
    }
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

/// Whether the Job has its final condition (`Complete` or `Failed`).
pub fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// When the Job finished, if it did.
pub fn finish_time(job: &Job) -> Option<DateTime<Utc>> {
    let status = job.status.as_ref()?;
    status.conditions.iter().flatten().find_map(|c| {
        ((c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            .then(|| c.last_transition_time.as_ref().map(to_chrono))
            .flatten()
    })
}

fn find_condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) {
    set_condition_status(status, type_, "True", reason, message, now);
}

fn set_condition_status(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let condition = JobCondition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(to_time(now)),
        last_transition_time: Some(to_time(now)),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) if existing.status == value => {}
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

fn pod_restart_policy(spec: &k8s_openapi::api::batch::v1::JobSpec) -> &str {
    spec.template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Never")
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|statuses| statuses.iter().map(|s| s.restart_count).sum())
        .unwrap_or(0)
}

/// The completion index of a pod of an Indexed Job.
fn pod_index(pod: &Pod) -> Option<i32> {
    pod.annotations()
        .get(COMPLETION_INDEX)
        .or_else(|| pod.labels().get(COMPLETION_INDEX))
        .and_then(|index| index.parse().ok())
}

/// How a finished (or vanishing) pod counts.
fn verdict(
    pod: &Pod,
    policy: &Option<PodFailurePolicy>,
    indexed: bool,
    completions: Option<i32>,
    completed: &BTreeSet<i32>,
) -> Verdict {
    if pod_phase(pod) == "Succeeded" {
        if indexed {
            let valid = pod_index(pod)
                .is_some_and(|i| i >= 0 && i < completions.unwrap_or(0) && !completed.contains(&i));
            if !valid {
                return Verdict::Ignored;
            }
        }
        return Verdict::Succeeded;
    }
    let rules = policy.as_ref().map(|p| p.rules.as_slice()).unwrap_or(&[]);
    // A pod deleted before it ended is a failure; the policy applies only to pods that
    // reached the Failed phase.
    if pod_phase(pod) != "Failed" {
        return Verdict::Failed(None);
    }
    for (index, rule) in rules.iter().enumerate() {
        let Some(why) = rule_matches(pod, rule) else {
            continue;
        };
        return match rule.action.as_str() {
            "Ignore" => Verdict::Ignored,
            "FailIndex" => Verdict::FailIndex,
            "FailJob" => Verdict::Failed(Some(format!(
                "{why} for pod {}/{} matching FailJob rule at index {index}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            ))),
            _ => Verdict::Failed(None),
        };
    }
    Verdict::Failed(None)
}

/// Whether a failed pod matches a pod failure policy rule, and why (for messages).
fn rule_matches(pod: &Pod, rule: &PodFailurePolicyRule) -> Option<String> {
    let status = pod.status.as_ref()?;
    if let Some(requirement) = &rule.on_exit_codes {
        let statuses = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten());
        for container in statuses {
            if requirement
                .container_name
                .as_ref()
                .is_some_and(|name| name != &container.name)
            {
                continue;
            }
            let Some(code) = container
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
            else {
                continue;
            };
            // Exit code 0 never matches: that container succeeded.
            if code == 0 {
                continue;
            }
            let listed = requirement.values.contains(&code);
            let matched = match requirement.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            if matched {
                return Some(format!(
                    "Container {} failed with exit code {code}",
                    container.name
                ));
            }
        }
        return None;
    }
    for pattern in rule.on_pod_conditions.iter().flatten() {
        // Defaulted to True by the API server; an object from elsewhere may lack it.
        let wanted = match pattern.status.as_str() {
            "" => "True",
            status => status,
        };
        let found = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == pattern.type_ && c.status == wanted);
        if found {
            return Some(format!("Pod has condition {}={wanted}", pattern.type_));
        }
    }
    None
}

/// When the most recent failure was, and how many failures came after the last
/// success, from the pods still listed.
/// Failures that an `Ignore` rule matches do not delay replacements.
fn failures_since_success(
    pods: &[Arc<Pod>],
    policy: &Option<PodFailurePolicy>,
) -> (u32, Option<DateTime<Utc>>) {
    let finished_at = |pod: &Pod| -> Option<DateTime<Utc>> {
        let status = pod.status.as_ref()?;
        status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|s| s.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
            .map(to_chrono)
            .max()
            .or_else(|| {
                status
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == "Ready")
                    .and_then(|c| c.last_transition_time.as_ref().map(to_chrono))
            })
    };
    let last_success = pods
        .iter()
        .filter(|pod| pod_phase(pod) == "Succeeded")
        .filter_map(|pod| finished_at(pod))
        .max();
    let failures: Vec<DateTime<Utc>> = pods
        .iter()
        .filter(|pod| pod_phase(pod) == "Failed")
        .filter(|pod| verdict(pod, policy, false, None, &BTreeSet::new()) != Verdict::Ignored)
        .filter_map(|pod| finished_at(pod))
        .filter(|at| last_success.is_none_or(|success| *at > success))
        .collect();
    (failures.len() as u32, failures.iter().max().copied())
}

/// How long a replacement must still wait after the recent failures, if at all.
fn remaining_backoff(
    pods: &[Arc<Pod>],
    policy: &Option<PodFailurePolicy>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let (failures, last) = failures_since_success(pods, policy);
    let last = last?;
    let delay = backoff_delay(failures);
    let ready_at = last + chrono::Duration::from_std(delay).ok()?;
    (ready_at > now).then(|| (ready_at - now).to_std().unwrap_or_default())
}

/// The wait before a replacement after `failures` failures in a row.
pub fn backoff_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow((failures - 1).min(16));
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

fn earliest(outcome: Outcome, delay: Duration) -> Outcome {
    match outcome {
        Outcome::RequeueAfter(current) if current <= delay => outcome,
        _ => Outcome::RequeueAfter(delay),
    }
}

/// Which active pods go first when there are too many: not yet running, then not
/// ready, then the youngest (upstream's `ActivePods` order).
fn pick_excess<'a>(active: &[&'a Arc<Pod>], count: usize) -> Vec<&'a Arc<Pod>> {
    let mut ranked: Vec<&Arc<Pod>> = active.to_vec();
    ranked.sort_by_key(|pod| {
        (
            pod_phase(pod) == "Running",
            is_pod_ready(pod),
            std::cmp::Reverse(pod.metadata.creation_timestamp.as_ref().map(to_chrono)),
        )
    });
    ranked.into_iter().take(count).collect()
}

/// For an Indexed Job: the active pods to delete (duplicates, out of range, already
/// completed) and the indexes to start, lowest first.
fn plan_indexes<'a>(
    completions: i32,
    parallelism: i32,
    completed: &BTreeSet<i32>,
    active: &[&'a Arc<Pod>],
    holding: i32,
) -> (Vec<&'a Arc<Pod>>, Vec<i32>) {
    let mut running = BTreeSet::new();
    let mut excess = Vec::new();
    for pod in active {
        match pod_index(pod) {
            Some(index)
                if index >= 0
                    && index < completions
                    && !completed.contains(&index)
                    && running.insert(index) => {}
            _ => excess.push(*pod),
        }
    }
    let room = (parallelism - (holding - excess.len() as i32)).max(0) as usize;
    let wanted = (0..completions)
        .filter(|index| !completed.contains(index) && !running.contains(index))
        .take(room.min(MAX_CREATIONS_PER_SYNC))
        .collect();
    (excess, wanted)
}

/// The failures of an index before this pod, as the pod carries them.
fn index_failure_count(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_FAILURE_COUNT))
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

/// The failures of `index` so far: one more than the count its latest failed pod
/// carried (0 when none failed).
fn index_failures(pods: &[Arc<Pod>], index: i32) -> i32 {
    pods.iter()
        .filter(|pod| pod_index(pod) == Some(index) && pod_phase(pod) == "Failed")
        .map(|pod| index_failure_count(pod) + 1)
        .max()
        .unwrap_or(0)
}

/// The first rule of an Indexed Job's `successPolicy` that the completed indexes
/// meet, as upstream's message ("Matched rules at index N"): all of
/// `succeededIndexes` done, or `succeededCount` of them (of all indexes without a
/// list).
fn success_policy_met(
    spec: &k8s_openapi::api::batch::v1::JobSpec,
    completed: &BTreeSet<i32>,
) -> Option<String> {
    let rules = &spec.success_policy.as_ref()?.rules;
    rules.iter().enumerate().find_map(|(index, rule)| {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(indexes), count) => {
                let wanted = parse_indexes(indexes);
                let done = wanted.intersection(completed).count() as i32;
                match count {
                    Some(count) => done >= count,
                    None => !wanted.is_empty() && done == wanted.len() as i32,
                }
            }
            (None, Some(count)) => completed.len() as i32 >= count,
            (None, None) => false,
        };
        met.then(|| format!("Matched rules at index {index}"))
    })
}

/// Parses `completedIndexes` (`"1,3-5,7"`); malformed parts are skipped.
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut indexes = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                if let (Ok(first), Ok(last)) = (first.parse::<i32>(), last.parse::<i32>()) {
                    indexes.extend(first..=last);
                }
            }
            None => {
                if let Ok(index) = part.parse() {
                    indexes.insert(index);
                }
            }
        }
    }
    indexes
}

/// Formats indexes as `completedIndexes` does: ascending, runs as `first-last`.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last = iter.next().unwrap();
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn failed_pod(exit_code: i32) -> Pod {
        pod(json!({
            "metadata": {"name": "p", "namespace": "n"},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "main", "image": "busybox", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "finishedAt": "2026-01-01T00:00:00Z"}},
            }]},
        }))
    }

    fn policy(rules: serde_json::Value) -> Option<PodFailurePolicy> {
        Some(serde_json::from_value(json!({"rules": rules})).unwrap())
    }

    #[test]
    fn success_policy_rules_match_indexes_and_counts() {
        let spec = |rules: serde_json::Value| -> k8s_openapi::api::batch::v1::JobSpec {
            serde_json::from_value(
                serde_json::json!({"template": {}, "successPolicy": {"rules": rules}}),
            )
            .unwrap()
        };
        let done = parse_indexes("0,2-3");
        let by_list =
            spec(serde_json::json!([{"succeededIndexes": "0-1"}, {"succeededIndexes": "2-3"}]));
        assert_eq!(
            success_policy_met(&by_list, &done),
            Some("Matched rules at index 1".into())
        );
        let by_count = spec(
            serde_json::json!([{"succeededCount": 4}, {"succeededIndexes": "0-3", "succeededCount": 3}]),
        );
        assert_eq!(
            success_policy_met(&by_count, &done),
            Some("Matched rules at index 1".into())
        );
        let unmet = spec(serde_json::json!([{"succeededIndexes": "0-1"}, {"succeededCount": 4}]));
        assert_eq!(success_policy_met(&unmet, &done), None);
    }

    #[test]
    fn completed_indexes_round_trip_as_ranges() {
        let indexes = parse_indexes("0-2,4,6-7");
        assert_eq!(indexes, BTreeSet::from([0, 1, 2, 4, 6, 7]));
        assert_eq!(format_indexes(&indexes), "0-2,4,6-7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(parse_indexes("x,3"), BTreeSet::from([3]));
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_ten_minutes() {
        assert_eq!(backoff_delay(0), Duration::ZERO);
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(2), Duration::from_secs(20));
        assert_eq!(backoff_delay(4), Duration::from_secs(80));
        assert_eq!(backoff_delay(30), BACKOFF_MAX);
    }

    #[test]
    fn failure_policy_rules_match_exit_codes_and_conditions_in_order() {
        let rules = policy(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [42]}},
        ]));
        let fatal = verdict(&failed_pod(42), &rules, false, Some(1), &BTreeSet::new());
        match fatal {
            Verdict::Failed(Some(message)) => {
                assert!(
                    message.contains("Container main failed with exit code 42"),
                    "{message}"
                );
                assert!(message.contains("FailJob rule at index 1"), "{message}");
            }
            other => panic!("expected FailJob, got {other:?}"),
        }
        assert_eq!(
            verdict(&failed_pod(1), &rules, false, Some(1), &BTreeSet::new()),
            Verdict::Failed(None)
        );
        let mut disrupted = failed_pod(1);
        disrupted.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({"type": "DisruptionTarget", "status": "True"})).unwrap(),
        ]);
        assert_eq!(
            verdict(&disrupted, &rules, false, Some(1), &BTreeSet::new()),
            Verdict::Ignored
        );
    }

    #[test]
    fn a_success_of_an_index_counts_once() {
        let done = pod(json!({
            "metadata": {"name": "p", "annotations": {COMPLETION_INDEX: "1"}},
            "status": {"phase": "Succeeded"},
        }));
        assert_eq!(
            verdict(&done, &None, true, Some(3), &BTreeSet::new()),
            Verdict::Succeeded
        );
        assert_eq!(
            verdict(&done, &None, true, Some(3), &BTreeSet::from([1])),
            Verdict::Ignored
        );
        assert_eq!(
            verdict(&done, &None, true, Some(1), &BTreeSet::new()),
            Verdict::Ignored
        );
    }

    #[test]
    fn indexes_to_start_skip_completed_and_running_ones() {
        let running = Arc::new(pod(json!({
            "metadata": {"name": "a", "annotations": {COMPLETION_INDEX: "1"}},
        })));
        let duplicate = Arc::new(pod(json!({
            "metadata": {"name": "b", "annotations": {COMPLETION_INDEX: "1"}},
        })));
        let active = [&running, &duplicate];
        let (excess, wanted) = plan_indexes(5, 3, &BTreeSet::from([0]), &active, 2);
        assert_eq!(excess.len(), 1);
        assert_eq!(excess[0].name_any(), "b");
        assert_eq!(wanted, vec![2, 3]);
    }

    #[test]
    fn recent_failures_after_the_last_success_set_the_backoff() {
        let now: DateTime<Utc> = "2026-01-01T00:00:05Z".parse().unwrap();
        let pods = vec![Arc::new(failed_pod(1))];
        assert_eq!(
            remaining_backoff(&pods, &None, now),
            Some(Duration::from_secs(5))
        );
        let ignore_all = policy(json!([
            {"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [0]}},
        ]));
        assert_eq!(remaining_backoff(&pods, &ignore_all, now), None);
        let later: DateTime<Utc> = "2026-01-01T00:00:10Z".parse().unwrap();
        assert_eq!(remaining_backoff(&pods, &None, later), None);
    }
}
