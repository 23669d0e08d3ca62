//! The Job controller in a real `krust server`, with hollow nodes playing the
//! kubelets: completions and parallelism, Indexed jobs, failure backoff and the
//! backoff limit, pod failure policies, deadlines, suspension and TTL.

mod workloads;

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use krust_e2e::hollow::{EXIT_CODE_ANNOTATION, NodeTemplate};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use workloads::{Cluster, DEADLINE, merge_patch, phase, wait_event, wait_for};

fn nodes(prefix: &str) -> Vec<NodeTemplate> {
    (0..2)
        .map(|i| NodeTemplate::new(format!("{prefix}-{i}")))
        .collect()
}

/// A Job whose pods exit with `exit_code` (run forever when None).
fn job(name: &str, exit_code: Option<i32>, spec: Value) -> Job {
    let mut annotations = json!({});
    if let Some(code) = exit_code {
        annotations[EXIT_CODE_ANNOTATION] = json!(code.to_string());
    }
    let mut spec_object = json!({
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": annotations},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]},
        },
    });
    for (key, value) in spec.as_object().unwrap() {
        spec_object[key] = value.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": spec_object,
    }))
    .unwrap()
}

async fn create(jobs: &Api<Job>, job: Job) {
    jobs.create(&PostParams::default(), &job).await.unwrap();
}

async fn status(jobs: &Api<Job>, name: &str) -> Value {
    let job = jobs.get(name).await.unwrap();
    serde_json::to_value(job.status.unwrap_or_default()).unwrap()
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

/// Waits until the job has condition `type_`; returns the status that had it.
async fn wait_condition(jobs: &Api<Job>, name: &str, type_: &str, timeout: Duration) -> Value {
    let seen = std::sync::Mutex::new(Value::Null);
    let seen_ref = &seen;
    wait_for(
        &format!("job {name} has condition {type_}"),
        timeout,
        || async move {
            let status = status(jobs, name).await;
            let found = condition(&status, type_).is_some();
            *seen_ref.lock().unwrap() = status;
            found
        },
    )
    .await;
    seen.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_their_completions_in_parallel_and_indexed() {
    let cluster = Cluster::start(nodes("job-complete")).await;
    cluster.namespace("complete").await;
    let jobs: Api<Job> = cluster.api("complete");

    create(
        &jobs,
        job(
            "three",
            Some(0),
            json!({"completions": 3, "parallelism": 2}),
        ),
    )
    .await;
    create(
        &jobs,
        job(
            "indexed",
            Some(0),
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
        ),
    )
    .await;

    let done = wait_condition(&jobs, "three", "Complete", DEADLINE).await;
    assert_eq!(done["succeeded"], 3, "{done}");
    assert_eq!(done["active"], 0, "{done}");
    assert!(done["completionTime"].is_string(), "{done}");
    assert!(done["startTime"].is_string(), "{done}");
    assert!(condition(&done, "SuccessCriteriaMet").is_some(), "{done}");
    let pods = cluster
        .pods("complete", "batch.kubernetes.io/job-name=three")
        .await;
    assert_eq!(pods.len(), 3, "one pod per completion");
    let job_uid = jobs.get("three").await.unwrap().metadata.uid.unwrap();
    for pod in &pods {
        assert_eq!(phase(pod), "Succeeded");
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "three");
        assert_eq!(labels["job-name"], "three");
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], job_uid);
        assert!(
            !pod.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "batch.kubernetes.io/job-tracking"),
            "a counted pod keeps no tracking finalizer"
        );
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
    }

    let done = wait_condition(&jobs, "indexed", "Complete", DEADLINE).await;
    assert_eq!(done["completedIndexes"], "0-2", "{done}");
    assert_eq!(done["succeeded"], 3, "{done}");
    let pods = cluster.pods("complete", "job-name=indexed").await;
    let mut indexes: Vec<String> = pods
        .iter()
        .map(|pod| {
            pod.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"]
                .clone()
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    let pod = &pods[0];
    let index = &pod.metadata.labels.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"];
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(
        spec.hostname.as_deref(),
        Some(format!("indexed-{index}").as_str())
    );
    let env = spec.containers[0].env.as_ref().unwrap();
    assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"));

    // What the controller did is told in Events.
    wait_event(&cluster.client, "complete", "three", "SuccessfulCreate").await;
    wait_event(&cluster.client, "complete", "three", "Completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_jobs_back_off_and_fail_by_limit_policy_or_deadline() {
    let cluster = Cluster::start(nodes("job-fail")).await;
    cluster.namespace("fail").await;
    let jobs: Api<Job> = cluster.api("fail");

    create(&jobs, job("flaky", Some(1), json!({"backoffLimit": 1}))).await;
    create(
        &jobs,
        job(
            "fatal",
            Some(42),
            json!({"backoffLimit": 5, "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            ]}}),
        ),
    )
    .await;
    create(
        &jobs,
        job("slow", None, json!({"activeDeadlineSeconds": 2})),
    )
    .await;

    // A FailJob rule ends the job at its first failure, without retries.
    let fatal = wait_condition(&jobs, "fatal", "Failed", DEADLINE).await;
    assert_eq!(fatal["failed"], 1, "{fatal}");
    let reason = &condition(&fatal, "Failed").unwrap()["reason"];
    assert_eq!(reason, "PodFailurePolicy", "{fatal}");
    let message = condition(&fatal, "Failed").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("exit code 42"), "{message}");

    // The deadline deletes the running pod and fails the job.
    let slow = wait_condition(&jobs, "slow", "Failed", DEADLINE).await;
    assert_eq!(
        condition(&slow, "Failed").unwrap()["reason"],
        "DeadlineExceeded"
    );
    assert_eq!(slow["active"], 0, "{slow}");
    wait_for("the slow job's pod is deleted", DEADLINE, || async {
        cluster.pods("fail", "job-name=slow").await.is_empty()
    })
    .await;

    // backoffLimit 1: the first failure is retried after the 10 s backoff, the
    // second fails the job.
    let flaky = wait_condition(&jobs, "flaky", "Failed", DEADLINE + Duration::from_secs(15)).await;
    assert_eq!(flaky["failed"], 2, "{flaky}");
    assert_eq!(
        condition(&flaky, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert!(condition(&flaky, "FailureTarget").is_some(), "{flaky}");
    let mut pods = cluster.pods("fail", "job-name=flaky").await;
    assert_eq!(pods.len(), 2, "one retry");
    pods.sort_by_key(|pod| pod.metadata.creation_timestamp.clone().map(|t| t.0));
    let first_finished = pods[0]
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap()
        .finished_at
        .clone()
        .unwrap()
        .0;
    let retried = pods[1].metadata.creation_timestamp.clone().unwrap().0;
    let waited = retried.duration_since(first_finished);
    assert!(
        waited.as_secs_f64() >= 9.0,
        "the retry waited the backoff (waited {waited:?})"
    );
    wait_event(&cluster.client, "fail", "flaky", "BackoffLimitExceeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_jobs_wait_and_finished_jobs_expire() {
    let cluster = Cluster::start(nodes("job-suspend")).await;
    cluster.namespace("suspend").await;
    let jobs: Api<Job> = cluster.api("suspend");

    create(
        &jobs,
        job(
            "later",
            Some(0),
            json!({"suspend": true, "ttlSecondsAfterFinished": 2}),
        ),
    )
    .await;
    let suspended = wait_condition(&jobs, "later", "Suspended", DEADLINE).await;
    assert!(suspended["startTime"].is_null(), "{suspended}");
    assert!(cluster.pods("suspend", "job-name=later").await.is_empty());

    let resume = json!({"spec": {"suspend": false}});
    merge_patch(&jobs, "later", resume).await;
    let done = wait_condition(&jobs, "later", "Complete", DEADLINE).await;
    assert_eq!(done["succeeded"], 1, "{done}");
    assert!(condition(&done, "Suspended").is_none(), "{done}");
    let completed = Instant::now();

    // ttlSecondsAfterFinished: the job goes, and its pods with it.
    wait_event(&cluster.client, "suspend", "later", "Resumed").await;
    wait_for("the finished job is deleted", DEADLINE, || async {
        jobs.get_opt("later").await.unwrap().is_none()
    })
    .await;
    wait_for("its pods are collected", DEADLINE, || async {
        cluster.pods("suspend", "job-name=later").await.is_empty()
    })
    .await;
    // Two seconds after the completion time, which has whole seconds.
    assert!(completed.elapsed() >= Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_adopt_matching_orphans_and_release_pods_that_stop_matching() {
    let cluster = Cluster::start(nodes("job-adopt")).await;
    cluster.namespace("adopt").await;
    let jobs: Api<Job> = cluster.api("adopt");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = cluster.api("adopt");
    create(
        &jobs,
        job("keeper", None, json!({"parallelism": 2, "completions": 4})),
    )
    .await;
    wait_for("two pods are active", DEADLINE, || async {
        status(&jobs, "keeper").await["active"] == 2
    })
    .await;
    let uid = jobs.get("keeper").await.unwrap().metadata.uid.unwrap();
    let owned_by_job = |pod: &k8s_openapi::api::core::v1::Pod| {
        pod.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == uid && r.controller == Some(true))
    };
    let name = cluster.pods("adopt", "job-name=keeper").await[0]
        .metadata
        .name
        .clone()
        .unwrap();

    // An orphan that matches the selector is adopted again.
    let orphan = json!({"metadata": {"ownerReferences": null, "finalizers": null}});
    merge_patch(&pods, &name, orphan).await;
    wait_for(
        "the orphan is adopted, with the tracking finalizer",
        DEADLINE,
        || async {
            let pod = pods.get(&name).await.unwrap();
            owned_by_job(&pod)
                && pod
                    .finalizers()
                    .iter()
                    .any(|f| f == "batch.kubernetes.io/job-tracking")
        },
    )
    .await;

    // A pod whose labels stop matching is released, and replaced.
    let relabel =
        json!({"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "someone-else"}}});
    merge_patch(&pods, &name, relabel).await;
    wait_for("the pod is released", DEADLINE, || async {
        !owned_by_job(&pods.get(&name).await.unwrap())
    })
    .await;
    let released = pods.get(&name).await.unwrap();
    assert!(
        released
            .finalizers()
            .iter()
            .all(|f| f != "batch.kubernetes.io/job-tracking"),
        "a released pod keeps no tracking finalizer"
    );
    wait_for("a replacement keeps two pods active", DEADLINE, || async {
        let owned = pods
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|pod| owned_by_job(pod) && pod.metadata.deletion_timestamp.is_none())
            .count();
        owned == 2 && status(&jobs, "keeper").await["active"] == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignore_rule_does_not_count_disrupted_pods() {
    let cluster = Cluster::start(nodes("job-ignore")).await;
    cluster.namespace("ignore").await;
    let jobs: Api<Job> = cluster.api("ignore");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = cluster.api("ignore");
    let policy = json!({"backoffLimit": 0, "podFailurePolicy": {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]}});
    create(&jobs, job("sturdy", None, policy)).await;
    wait_for("the pod is active", DEADLINE, || async {
        status(&jobs, "sturdy").await["active"] == 1
    })
    .await;
    let first = cluster.pods("ignore", "job-name=sturdy").await[0].name_any();

    // The pod fails because it was disrupted (as an eviction reports it), its
    // container killed just now.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let disrupted = json!({"status": {"phase": "Failed",
        "conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"},
        ],
        "containerStatuses": [{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": now}},
        }],
    }});
    pods.patch_status(
        &first,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&disrupted),
    )
    .await
    .unwrap();
    let failed_at = Instant::now();
    wait_for("a replacement runs", DEADLINE, || async {
        cluster
            .pods("ignore", "job-name=sturdy")
            .await
            .iter()
            .any(|pod| pod.name_any() != first && phase(pod) == "Running")
    })
    .await;
    assert!(
        failed_at.elapsed() < Duration::from_secs(8),
        "an ignored failure does not wait the 10 s backoff"
    );
    let sturdy = status(&jobs, "sturdy").await;
    assert_eq!(
        sturdy["failed"], 0,
        "an ignored failure is not counted: {sturdy}"
    );
    assert!(
        condition(&sturdy, "Failed").is_none(),
        "backoffLimit 0 is not reached: {sturdy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_succeeds_early_by_its_success_policy() {
    let cluster = Cluster::start(nodes("job-policy")).await;
    cluster.namespace("policy").await;
    let jobs: Api<Job> = cluster.api("policy");
    create(
        &jobs,
        job(
            "leader",
            None,
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
                   "successPolicy": {"rules": [{"succeededIndexes": "0"}]}}),
        ),
    )
    .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = cluster.api("policy");
    wait_for("three running pods", DEADLINE, || async {
        cluster
            .pods("policy", "app=leader")
            .await
            .iter()
            .filter(|p| phase(p) == "Running")
            .count()
            == 3
    })
    .await;
    // Only index 0 finishes; the rule asks for nothing more.
    let leader = cluster
        .pods("policy", "batch.kubernetes.io/job-completion-index=0")
        .await
        .remove(0);
    merge_patch(
        &pods,
        &leader.name_any(),
        json!({"metadata": {"annotations": {EXIT_CODE_ANNOTATION: "0"}}}),
    )
    .await;
    let done = wait_condition(&jobs, "leader", "Complete", DEADLINE).await;
    let met = condition(&done, "SuccessCriteriaMet").expect("SuccessCriteriaMet first");
    assert_eq!(met["reason"], "SuccessPolicy", "{done}");
    assert_eq!(met["message"], "Matched rules at index 0", "{done}");
    assert_eq!(
        condition(&done, "Complete").unwrap()["reason"],
        "SuccessPolicy"
    );
    assert_eq!(done["succeeded"], 1, "{done}");
    assert_eq!(done["completedIndexes"], "0", "{done}");
    // The other indexes were stopped.
    wait_for("the other pods to be stopped", DEADLINE, || async {
        cluster
            .pods("policy", "app=leader")
            .await
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some() || phase(p) != "Running")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_fails_past_its_backoff_limit_per_index_fails_alone() {
    let cluster = Cluster::start(nodes("job-per-index")).await;
    cluster.namespace("perindex").await;
    let jobs: Api<Job> = cluster.api("perindex");
    create(
        &jobs,
        job(
            "flaky",
            None,
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
                   "backoffLimitPerIndex": 1}),
        ),
    )
    .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = cluster.api("perindex");
    // Indexes 0 and 2 succeed; every pod of index 1 fails.
    let deadline = Instant::now() + DEADLINE;
    let mut failure_counts = std::collections::BTreeSet::new();
    loop {
        let status = status(&jobs, "flaky").await;
        if condition(&status, "Failed").is_some() {
            assert_eq!(
                condition(&status, "Failed").unwrap()["reason"],
                "FailedIndexes",
                "{status}"
            );
            assert_eq!(status["failedIndexes"], "1", "{status}");
            assert_eq!(status["completedIndexes"], "0,2", "{status}");
            assert_eq!(status["failed"], 2, "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never failed its index: {status}"
        );
        for pod in cluster.pods("perindex", "app=flaky").await {
            let annotations = pod.annotations();
            if phase(&pod) != "Running" || annotations.contains_key(EXIT_CODE_ANNOTATION) {
                continue;
            }
            let index = annotations["batch.kubernetes.io/job-completion-index"].clone();
            let code = if index == "1" { "1" } else { "0" };
            if index == "1" {
                failure_counts
                    .insert(annotations["batch.kubernetes.io/job-index-failure-count"].clone());
            }
            merge_patch(
                &pods,
                &pod.name_any(),
                json!({"metadata": {"annotations": {EXIT_CODE_ANNOTATION: code}}}),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The replacement of index 1 carried the failures before it.
    assert_eq!(failure_counts.into_iter().collect::<Vec<_>>(), ["0", "1"]);
}
