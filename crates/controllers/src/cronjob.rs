//! The CronJob controller (upstream's `pkg/controller/cronjob`, the v2 controller):
//! creates a Job from a CronJob's `jobTemplate` at each time its schedule names.
//!
//! - `schedule`: standard five-field cron syntax and the `@hourly`-style nicknames
//!   (parsed with `croner`), evaluated in `timeZone` (an IANA name, through
//!   `chrono-tz`; UTC when unset). A `TZ=`/`CRON_TZ=` prefix is refused as upstream
//!   does; a schedule or zone that does not parse gets a Warning Event and no Jobs.
//! - Each scheduled time gets one Job named `<cronjob>-<minutes since the epoch>`,
//!   annotated with `batch.kubernetes.io/cronjob-scheduled-timestamp`. Missed times
//!   are caught up with only the most recent one, and not at all once
//!   `startingDeadlineSeconds` passed.
//! - `concurrencyPolicy`: `Allow`, `Forbid` (skip while a Job runs) or `Replace`
//!   (delete the running Jobs first); `suspend` stops scheduling.
//! - Status: `active` (the running Jobs), `lastScheduleTime`, `lastSuccessfulTime`;
//!   finished Jobs beyond `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` are
//!   deleted, oldest first.
//!
//! The schedule arithmetic is plain functions of an explicit `now` ([`next_schedule`],
//! [`missed_schedules`]), so it is unit tested without waiting for a clock.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use croner::Cron;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};

use crate::cache::{Cache, Caches, ObjectKey};
use crate::job::{finish_time, is_finished};
use crate::workload::{
    Events, controller_key, controller_reference, controller_uid, to_chrono, to_time,
};
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// Annotation on a scheduled Job: the time it was scheduled for (RFC 3339, in the
/// CronJob's time zone).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed times than this get a `TooManyMissedTimes` warning (upstream's limit).
const MISSED_TIMES_WARNING: usize = 100;
/// Waking up this much after a scheduled time makes sure it has passed.
const WAKE_SLACK: Duration = Duration::from_millis(100);

/// Runs the CronJob controller until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(CronJobController {
        client: caches.client().clone(),
        cron_jobs: caches.get::<CronJob>(),
        jobs: caches.get::<Job>(),
        events: Events::new(caches.client().clone(), "cronjob-controller"),
    });
    let queue = WorkQueue::new();
    {
        let (controller, queue) = (controller.clone(), queue.clone());
        tokio::spawn(async move {
            let mut changes = controller.cron_jobs.subscribe();
            while let Some(change) = changes.recv().await {
                queue.add(ObjectKey::of(change.object().as_ref()));
            }
        });
    }
    {
        let (controller, queue) = (controller.clone(), queue.clone());
        tokio::spawn(async move {
            let mut changes = controller.jobs.subscribe();
            while let Some(change) = changes.recv().await {
                if let Some(owner) = controller_key(&change.object().metadata, "CronJob") {
                    queue.add(owner);
                }
            }
        });
    }
    controller.cron_jobs.wait_synced().await;
    controller.jobs.wait_synced().await;
    run_workers("cronjob", queue, 2, |key| controller.clone().sync(key)).await;
    Ok(())
}

struct CronJobController {
    client: Client,
    cron_jobs: Arc<Cache<CronJob>>,
    jobs: Arc<Cache<Job>>,
    events: Events,
}

/// A parsed schedule and the zone it is read in.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

/// Why a CronJob cannot be scheduled: the Event reason and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError {
    pub reason: &'static str,
    pub message: String,
}

impl Schedule {
    /// Parses `schedule` in `time_zone` (UTC when None), as the controller reads them.
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let zone = match time_zone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| ScheduleError {
                reason: "UnknownTimeZone",
                message: format!("invalid timeZone: {name:?}: not an IANA time zone name"),
            })?,
        };
        let trimmed = schedule.trim();
        let unparseable = |why: String| ScheduleError {
            reason: "UnparseableSchedule",
            message: format!("unparseable schedule: {schedule:?}: {why}"),
        };
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(unparseable(
                "TZ and CRON_TZ are not supported, set spec.timeZone instead".into(),
            ));
        }
        let cron = Cron::new(trimmed)
            .parse()
            .map_err(|error| unparseable(error.to_string()))?;
        Ok(Schedule { cron, zone })
    }

    /// The first scheduled time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }

    /// `at` as RFC 3339 in the schedule's zone.
    pub fn format(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.zone)
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// The scheduled times that passed in `(earliest, now]`: how many (at most
/// `MISSED_TIMES_WARNING + 1` are counted) and the most recent one.
pub fn missed_schedules(
    schedule: &Schedule,
    earliest: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (usize, Option<DateTime<Utc>>) {
    let mut count = 0;
    let mut latest = None;
    let mut cursor = earliest;
    while let Some(at) = schedule.next_after(cursor).filter(|at| *at <= now) {
        count += 1;
        latest = Some(at);
        cursor = at;
        if count > MISSED_TIMES_WARNING {
            // Too many to walk: find the most recent one from a window before now.
            for window in [3600, 86_400, 31 * 86_400, 366 * 86_400, 5 * 366 * 86_400] {
                let start = (now - chrono::Duration::seconds(window)).max(cursor);
                let mut recent = None;
                let mut cursor = start;
                while let Some(at) = schedule.next_after(cursor).filter(|at| *at <= now) {
                    recent = Some(at);
                    cursor = at;
                }
                if recent.is_some() {
                    return (count, recent);
                }
            }
            return (count, latest);
        }
    }
    (count, latest)
}

/// When the CronJob should be looked at again: just after its next scheduled time.
pub fn next_schedule(schedule: &Schedule, now: DateTime<Utc>) -> Option<Duration> {
    let next = schedule.next_after(now)?;
    Some((next - now).to_std().unwrap_or_default() + WAKE_SLACK)
}

/// The name of the Job for the scheduled time `at` (upstream's
/// `<cronjob>-<minutes since the epoch>`).
pub fn job_name(cron_job: &str, at: DateTime<Utc>) -> String {
    format!("{cron_job}-{}", at.timestamp().div_euclid(60))
}

/// What to do at a scheduled time, given the running Jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Create the Job.
    Create,
    /// Delete the running Jobs, then create the Job (`Replace`).
    ReplaceThenCreate,
    /// Skip this time (`Forbid` while a Job runs).
    Skip,
}

/// The concurrency decision for a new Job while `running` Jobs are active.
pub fn concurrency_decision(policy: Option<&str>, running: usize) -> Start {
    match (policy.unwrap_or("Allow"), running) {
        (_, 0) => Start::Create,
        ("Forbid", _) => Start::Skip,
        ("Replace", _) => Start::ReplaceThenCreate,
        _ => Start::Create,
    }
}

/// The finished Jobs to delete to keep `limit` of them, oldest first.
pub fn history_to_delete(mut finished: Vec<Arc<Job>>, limit: Option<i32>) -> Vec<Arc<Job>> {
    let Some(limit) = limit else {
        return Vec::new();
    };
    let limit = limit.max(0) as usize;
    if finished.len() <= limit {
        return Vec::new();
    }
    finished.sort_by_key(|job| {
        let started = job
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(to_chrono);
        (
            started,
            job.metadata.creation_timestamp.as_ref().map(to_chrono),
            job.name_any(),
        )
    });
    let excess = finished.len() - limit;
    finished.into_iter().take(excess).collect()
}

fn job_succeeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

impl CronJobController {
    async fn sync(self: Arc<Self>, key: ObjectKey) -> anyhow::Result<Outcome> {
        let Some(cron_job) = self.cron_jobs.get(&key.namespace, &key.name) else {
            return Ok(Outcome::Done);
        };
        if cron_job.metadata.deletion_timestamp.is_some() {
            return Ok(Outcome::Done);
        }
        let now = Utc::now();
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), &key.namespace);
        let cron_jobs_api: Api<CronJob> = Api::namespaced(self.client.clone(), &key.namespace);
        let uid = cron_job.uid().unwrap_or_default();
        let owned: Vec<Arc<Job>> = self
            .jobs
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|job| controller_uid(&job.metadata, "CronJob") == Some(uid.as_str()))
            .collect();
        let spec = cron_job.spec.clone().unwrap_or_default();
        let mut status = cron_job.status.clone().unwrap_or_default();

        // The running Jobs, and what finished since the last look.
        let mut active: Vec<ObjectReference> = Vec::new();
        for job in &owned {
            let listed = status
                .active
                .iter()
                .flatten()
                .find(|r| r.uid.as_deref() == job.uid().as_deref());
            if is_finished(job) {
                if listed.is_some() {
                    let condition = if job_succeeded(job) {
                        "Complete"
                    } else {
                        "Failed"
                    };
                    let message = format!(
                        "Saw completed job: {}, condition: {condition}",
                        job.name_any()
                    );
                    self.events
                        .normal(cron_job.as_ref(), "SawCompletedJob", message)
                        .await;
                }
                if job_succeeded(job)
                    && let Some(finished) = finish_time(job)
                {
                    let later = status
                        .last_successful_time
                        .as_ref()
                        .is_none_or(|t| to_chrono(t) < finished);
                    if later {
                        status.last_successful_time = Some(to_time(finished));
                    }
                }
            } else if job.metadata.deletion_timestamp.is_none() {
                // A listed reference stays as written (its resourceVersion is the
                // creation's, as upstream's), so Job updates cause no status writes.
                active.push(listed.cloned().unwrap_or_else(|| job_reference(job)));
            }
        }
        for reference in status.active.iter().flatten() {
            let known = owned.iter().any(|job| job.uid() == reference.uid);
            if !known {
                let name = reference.name.clone().unwrap_or_default();
                // A Job the cache has not shown yet is not missing: it was just created.
                if jobs_api.get_opt(&name).await?.is_none() {
                    let message = format!("Active job went missing: {name}");
                    self.events
                        .warning(cron_job.as_ref(), "MissingJob", message)
                        .await;
                } else {
                    active.push(reference.clone());
                }
            }
        }
        status.active = (!active.is_empty()).then_some(active);

        // History limits.
        let (succeeded, failed): (Vec<Arc<Job>>, Vec<Arc<Job>>) = owned
            .iter()
            .filter(|job| is_finished(job) && job.metadata.deletion_timestamp.is_none())
            .cloned()
            .partition(|job| job_succeeded(job));
        let mut doomed = history_to_delete(succeeded, spec.successful_jobs_history_limit);
        doomed.extend(history_to_delete(failed, spec.failed_jobs_history_limit));
        for job in doomed {
            self.delete_job(&jobs_api, &cron_job, &job).await?;
        }

        let outcome = self
            .schedule(&cron_job, &jobs_api, &mut status, now)
            .await?;
        if cron_job.status.as_ref() != Some(&status) {
            let mut updated = (*cron_job).clone();
            updated.status = Some(status);
            cron_jobs_api
                .replace_status(&key.name, &PostParams::default(), &updated)
                .await
                .context("cannot update the cronjob status")?;
        }
        Ok(outcome)
    }

    /// Starts the Job of the most recent scheduled time if it is due.
    async fn schedule(
        &self,
        cron_job: &CronJob,
        jobs_api: &Api<Job>,
        status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Outcome> {
        let spec = cron_job.spec.clone().unwrap_or_default();
        let schedule = match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
            Ok(schedule) => schedule,
            Err(error) => {
                // Nothing to retry until the spec changes.
                self.events
                    .warning(cron_job, error.reason, error.message)
                    .await;
                return Ok(Outcome::Done);
            }
        };
        let wake = next_schedule(&schedule, now).map_or(Outcome::Done, Outcome::RequeueAfter);
        if spec.suspend.unwrap_or(false) {
            return Ok(Outcome::Done);
        }
        let created = cron_job.metadata.creation_timestamp.as_ref().map(to_chrono);
        let mut earliest = status
            .last_schedule_time
            .as_ref()
            .map(to_chrono)
            .or(created)
            .unwrap_or(now);
        if let Some(deadline) = spec.starting_deadline_seconds {
            earliest = earliest.max(now - chrono::Duration::seconds(deadline));
        }
        let (missed, latest) = missed_schedules(&schedule, earliest, now);
        let Some(scheduled) = latest else {
            return Ok(wake);
        };
        if missed > MISSED_TIMES_WARNING {
            let message = format!(
                "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
            );
            self.events
                .warning(cron_job, "TooManyMissedTimes", message)
                .await;
        }
        let name = job_name(&cron_job.name_any(), scheduled);
        let running = status.active.as_ref().map_or(0, Vec::len);
        let already = status
            .active
            .iter()
            .flatten()
            .any(|r| r.name.as_deref() == Some(name.as_str()))
            || self
                .jobs
                .get(&cron_job.namespace().unwrap_or_default(), &name)
                .is_some();
        if already {
            return Ok(wake);
        }
        match concurrency_decision(spec.concurrency_policy.as_deref(), running) {
            Start::Skip => {
                // The run stays due: it starts when the running Job ends, if still
                // within startingDeadlineSeconds.
                let message = "Not starting job because prior execution is running and concurrency policy is Forbid";
                self.events
                    .normal(cron_job, "JobAlreadyActive", message.into())
                    .await;
                return Ok(wake);
            }
            Start::ReplaceThenCreate => {
                for reference in status.active.take().unwrap_or_default() {
                    let name = reference.name.unwrap_or_default();
                    if let Some(job) = self
                        .jobs
                        .get(&cron_job.namespace().unwrap_or_default(), &name)
                    {
                        self.delete_job(jobs_api, cron_job, &job).await?;
                    }
                }
            }
            Start::Create => {}
        }
        let template = spec.job_template;
        let template_metadata = template.metadata.unwrap_or_default();
        let mut annotations = template_metadata.annotations.unwrap_or_default();
        annotations.insert(
            SCHEDULED_TIMESTAMP_ANNOTATION.into(),
            schedule.format(scheduled),
        );
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: cron_job.namespace(),
                labels: template_metadata.labels,
                annotations: Some(annotations),
                owner_references: Some(vec![controller_reference(cron_job)]),
                ..ObjectMeta::default()
            },
            spec: template.spec,
            status: None,
        };
        match jobs_api.create(&PostParams::default(), &job).await {
            Ok(created) => {
                let message = format!("Created job {name}");
                self.events
                    .normal(cron_job, "SuccessfulCreate", message)
                    .await;
                status
                    .active
                    .get_or_insert_with(Vec::new)
                    .push(job_reference(&created));
            }
            // Created before (by an earlier sync whose status write was lost).
            Err(kube::Error::Api(error)) if error.code == 409 => {}
            Err(error) => {
                let message = format!("Error creating job: {error}");
                self.events.warning(cron_job, "FailedCreate", message).await;
                return Err(error).context("cannot create the scheduled job");
            }
        }
        status.last_schedule_time = Some(to_time(scheduled));
        Ok(wake)
    }

    async fn delete_job(
        &self,
        jobs_api: &Api<Job>,
        cron_job: &CronJob,
        job: &Job,
    ) -> anyhow::Result<()> {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match jobs_api.delete(&job.name_any(), &params).await {
            Ok(_) => {
                let message = format!("Deleted job {}", job.name_any());
                self.events
                    .normal(cron_job, "SuccessfulDelete", message)
                    .await;
                Ok(())
            }
            Err(kube::Error::Api(error)) if error.code == 404 => Ok(()),
            Err(error) => Err(error).context("cannot delete a job"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn schedules_parse_with_nicknames_and_refuse_bad_input() {
        assert!(Schedule::parse("*/5 * * * *", None).is_ok());
        assert!(Schedule::parse("@hourly", Some("Europe/Berlin")).is_ok());
        let error = Schedule::parse("not a schedule", None).unwrap_err();
        assert_eq!(error.reason, "UnparseableSchedule");
        let error = Schedule::parse("TZ=UTC * * * * *", None).unwrap_err();
        assert!(error.message.contains("spec.timeZone"), "{}", error.message);
        let error = Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(error.reason, "UnknownTimeZone");
        // Seconds are not part of the standard syntax.
        assert!(Schedule::parse("0 * * * * *", None).is_err());
    }

    #[test]
    fn the_next_time_follows_the_time_zone() {
        let schedule = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
        // 09:00 in Berlin is 08:00 UTC in winter.
        assert_eq!(
            schedule.next_after(at("2026-01-10T07:00:00Z")),
            Some(at("2026-01-10T08:00:00Z"))
        );
        let utc = Schedule::parse("0 9 * * *", None).unwrap();
        assert_eq!(
            utc.next_after(at("2026-01-10T07:00:00Z")),
            Some(at("2026-01-10T09:00:00Z"))
        );
        assert_eq!(
            schedule.format(at("2026-01-10T08:00:00Z")),
            "2026-01-10T09:00:00+01:00"
        );
        assert_eq!(
            next_schedule(&utc, at("2026-01-10T08:59:59Z")),
            Some(Duration::from_secs(1) + WAKE_SLACK)
        );
    }

    #[test]
    fn missed_times_are_counted_and_the_latest_is_kept() {
        let every_minute = Schedule::parse("* * * * *", None).unwrap();
        let (count, latest) = missed_schedules(
            &every_minute,
            at("2026-01-10T10:00:00Z"),
            at("2026-01-10T10:03:30Z"),
        );
        assert_eq!(count, 3);
        assert_eq!(latest, Some(at("2026-01-10T10:03:00Z")));
        let (count, latest) = missed_schedules(
            &every_minute,
            at("2026-01-10T10:00:00Z"),
            at("2026-01-10T10:00:59Z"),
        );
        assert_eq!((count, latest), (0, None));
        // A week of minutes: more than the warning limit, and still the latest.
        let (count, latest) = missed_schedules(
            &every_minute,
            at("2026-01-03T10:00:00Z"),
            at("2026-01-10T10:00:30Z"),
        );
        assert!(count > MISSED_TIMES_WARNING);
        assert_eq!(latest, Some(at("2026-01-10T10:00:00Z")));
    }

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        assert_eq!(job_name("backup", at("1970-01-01T01:00:00Z")), "backup-60");
        assert_eq!(
            job_name("backup", at("2026-01-10T10:00:00Z")),
            "backup-29467320"
        );
    }

    #[test]
    fn concurrency_policies_decide_about_running_jobs() {
        assert_eq!(concurrency_decision(None, 1), Start::Create);
        assert_eq!(concurrency_decision(Some("Forbid"), 0), Start::Create);
        assert_eq!(concurrency_decision(Some("Forbid"), 1), Start::Skip);
        assert_eq!(
            concurrency_decision(Some("Replace"), 2),
            Start::ReplaceThenCreate
        );
    }

    #[test]
    fn history_keeps_the_newest_finished_jobs() {
        let job = |name: &str, started: &str| -> Arc<Job> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "status": {"startTime": started},
                }))
                .unwrap(),
            )
        };
        let jobs = vec![
            job("c", "2026-01-10T10:02:00Z"),
            job("a", "2026-01-10T10:00:00Z"),
            job("b", "2026-01-10T10:01:00Z"),
        ];
        let doomed: Vec<String> = history_to_delete(jobs.clone(), Some(1))
            .iter()
            .map(|j| j.name_any())
            .collect();
        assert_eq!(doomed, ["a", "b"]);
        assert!(history_to_delete(jobs.clone(), None).is_empty());
        assert_eq!(history_to_delete(jobs, Some(0)).len(), 3);
    }
}
