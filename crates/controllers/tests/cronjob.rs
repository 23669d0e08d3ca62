//! The CronJob controller in a real `krust server`: a `* * * * *` schedule fires
//! (within about a minute) and its Job runs to completion; bad schedules and time
//! zones get Warning Events and no Jobs; history limits delete the oldest finished
//! Jobs. The schedule arithmetic itself is unit tested in `cronjob.rs`.

mod workloads;

use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use krust_e2e::hollow::{EXIT_CODE_ANNOTATION, NodeTemplate};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use workloads::{Cluster, DEADLINE, event_reasons, wait_event, wait_for};

fn job_spec() -> Value {
    json!({
        "template": {
            "metadata": {"annotations": {EXIT_CODE_ANNOTATION: "0"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]},
        },
    })
}

fn cron_job(name: &str, schedule: &str, extra: Value) -> CronJob {
    let mut spec = json!({
        "schedule": schedule,
        "jobTemplate": {"metadata": {"labels": {"cron": name}}, "spec": job_spec()},
    });
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn succeeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_minute_cron_job_fires_and_bad_schedules_are_reported() {
    let cluster = Cluster::start(vec![NodeTemplate::new("cron-0")]).await;
    cluster.namespace("cron").await;
    let cron_jobs: Api<CronJob> = cluster.api("cron");
    let jobs: Api<Job> = cluster.api("cron");
    let params = PostParams::default();
    cron_jobs
        .create(
            &params,
            &cron_job(
                "minutely",
                "* * * * *",
                json!({"timeZone": "Europe/Berlin"}),
            ),
        )
        .await
        .unwrap();
    cron_jobs
        .create(
            &params,
            &cron_job("garbled", "every day at noon", json!({})),
        )
        .await
        .unwrap();
    cron_jobs
        .create(
            &params,
            &cron_job("prefixed", "TZ=UTC * * * * *", json!({})),
        )
        .await
        .unwrap();
    cron_jobs
        .create(
            &params,
            &cron_job("nowhere", "* * * * *", json!({"timeZone": "Mars/Olympus"})),
        )
        .await
        .unwrap();

    wait_event(&cluster.client, "cron", "garbled", "UnparseableSchedule").await;
    wait_event(&cluster.client, "cron", "prefixed", "UnparseableSchedule").await;
    wait_event(&cluster.client, "cron", "nowhere", "UnknownTimeZone").await;

    // Fires at the start of the next minute: at most ~60 s away.
    let first_job = || async {
        let listed = jobs.list(&Default::default()).await.unwrap().items;
        listed
            .into_iter()
            .find(|job| job.name_any().starts_with("minutely-"))
    };
    wait_for(
        "the cron job created its first job",
        Duration::from_secs(75),
        || async { first_job().await.is_some() },
    )
    .await;
    let job = first_job().await.unwrap();
    let minutes: i64 = job
        .name_any()
        .trim_start_matches("minutely-")
        .parse()
        .unwrap();
    let scheduled = &job.annotations()["batch.kubernetes.io/cronjob-scheduled-timestamp"];
    let scheduled_at = chrono::DateTime::parse_from_rfc3339(scheduled).unwrap();
    assert_eq!(
        scheduled_at.timestamp(),
        minutes * 60,
        "the name counts minutes since the epoch"
    );
    assert!(
        scheduled.ends_with("+01:00") || scheduled.ends_with("+02:00"),
        "the scheduled time is written in the cron job's zone: {scheduled}"
    );
    assert_eq!(job.labels()["cron"], "minutely");
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("CronJob", Some(true))
    );

    // The job runs to completion; the cron job's status follows.
    wait_for(
        "the scheduled job succeeds and the cron job saw it",
        DEADLINE,
        || async {
            let job = jobs.get(&job.name_any()).await.unwrap();
            let cron = cron_jobs.get("minutely").await.unwrap();
            let status = cron.status.unwrap_or_default();
            succeeded(&job) && status.last_successful_time.is_some() && status.active.is_none()
        },
    )
    .await;
    let status = cron_jobs.get("minutely").await.unwrap().status.unwrap();
    let last_schedule = status.last_schedule_time.unwrap().0;
    assert_eq!(last_schedule.as_second(), minutes * 60);
    wait_event(&cluster.client, "cron", "minutely", "SuccessfulCreate").await;
    wait_event(&cluster.client, "cron", "minutely", "SawCompletedJob").await;

    // Nothing was created for the bad ones.
    let names: Vec<String> = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|j| j.name_any())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("minutely-")),
        "{names:?}"
    );
    assert!(
        !event_reasons(&cluster.client, "cron", "garbled")
            .await
            .contains(&"SuccessfulCreate".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits_delete_the_oldest_finished_jobs() {
    let cluster = Cluster::start(vec![NodeTemplate::new("cron-history-0")]).await;
    cluster.namespace("history").await;
    let cron_jobs: Api<CronJob> = cluster.api("history");
    let jobs: Api<Job> = cluster.api("history");
    let params = PostParams::default();
    // Suspended: it schedules nothing itself, but still keeps its history short.
    let owner = cron_jobs
        .create(
            &params,
            &cron_job(
                "keeper",
                "0 0 1 1 *",
                json!({"suspend": true, "successfulJobsHistoryLimit": 1}),
            ),
        )
        .await
        .unwrap();
    let reference = json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "name": "keeper",
        "uid": owner.uid().unwrap(), "controller": true, "blockOwnerDeletion": true,
    });
    for name in ["keeper-1", "keeper-2", "keeper-3"] {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": name, "ownerReferences": [reference]},
            "spec": job_spec(),
        }))
        .unwrap();
        jobs.create(&params, &job).await.unwrap();
        // One after the other, so that their start times (then names) order them.
        wait_for(&format!("{name} succeeds"), DEADLINE, || async {
            jobs.get_opt(name)
                .await
                .unwrap()
                .is_none_or(|job| succeeded(&job))
        })
        .await;
    }
    wait_for("only the newest finished job is kept", DEADLINE, || async {
        let names: Vec<String> = jobs
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|job| job.metadata.deletion_timestamp.is_none())
            .map(|job| job.name_any())
            .collect();
        names == ["keeper-3"]
    })
    .await;
    wait_event(&cluster.client, "history", "keeper", "SuccessfulDelete").await;
}
