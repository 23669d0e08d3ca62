//! The StatefulSet controller in a real `krust server` with hollow nodes: ordered
//! start and scale-down, stable identities and claims, the claim retention policy,
//! Parallel management, rolling updates with a partition, OnDelete, and the
//! ControllerRevisions behind them (checked with `kubectl rollout status` too).

mod workloads;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use krust_e2e::hollow::{NodeTemplate, READY_ANNOTATION};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use workloads::{Cluster, DEADLINE, merge_patch, phase, wait_event, wait_for};

fn stateful_set(name: &str, spec: Value, ready: bool) -> StatefulSet {
    let mut full = json!({
        "serviceName": name,
        "replicas": 3,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": {READY_ANNOTATION: ready.to_string()}},
            "spec": {"containers": [{"name": "main", "image": "busybox:1"}]},
        },
        "volumeClaimTemplates": [{
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }],
    });
    for (key, value) in spec.as_object().unwrap() {
        full[key] = value.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name}, "spec": full,
    }))
    .unwrap()
}

async fn pod_names(pods: &Api<Pod>, app: &str) -> Vec<String> {
    let mut names: Vec<String> = pods
        .list(&kube::api::ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    names.sort();
    names
}

async fn claim_names(claims: &Api<PersistentVolumeClaim>) -> Vec<String> {
    let mut names: Vec<String> = claims
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| c.name_any())
        .collect();
    names.sort();
    names
}

async fn set_status(sets: &Api<StatefulSet>, name: &str) -> Value {
    serde_json::to_value(sets.get(name).await.unwrap().status.unwrap_or_default()).unwrap()
}

async fn make_ready(pods: &Api<Pod>, name: &str) {
    let patch = json!({"metadata": {"annotations": {READY_ANNOTATION: "true"}}});
    merge_patch(pods, name, patch).await;
}

async fn is_running(pods: &Api<Pod>, name: &str) -> bool {
    pods.get_opt(name)
        .await
        .unwrap()
        .is_some_and(|pod| phase(&pod) == "Running")
}

fn revision_label(pod: &Pod) -> String {
    pod.labels()["controller-revision-hash"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_sets_start_in_order_and_scale_down_from_the_top() {
    let cluster = Cluster::start(vec![
        NodeTemplate::new("sts-ordered-0"),
        NodeTemplate::new("sts-ordered-1"),
    ])
    .await;
    cluster.namespace("ordered").await;
    let sets: Api<StatefulSet> = cluster.api("ordered");
    let pods: Api<Pod> = cluster.api("ordered");
    let claims: Api<PersistentVolumeClaim> = cluster.api("ordered");
    let retention = json!({"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"}});
    sets.create(
        &PostParams::default(),
        &stateful_set("web", retention, false),
    )
    .await
    .unwrap();

    // Each pod waits for its predecessor to be Running and Ready.
    for ordinal in 0..3 {
        let name = format!("web-{ordinal}");
        wait_for(&format!("{name} runs"), DEADLINE, || {
            is_running(&pods, &name)
        })
        .await;
        // The controller has seen this pod (and it is not ready): nothing further.
        wait_for("the status counts the pod", DEADLINE, || async {
            set_status(&sets, "web").await["replicas"] == ordinal + 1
        })
        .await;
        let expected: Vec<String> = (0..=ordinal).map(|i| format!("web-{i}")).collect();
        assert_eq!(
            pod_names(&pods, "web").await,
            expected,
            "no pod before its predecessor is ready"
        );
        make_ready(&pods, &name).await;
    }
    wait_for("all three are ready", DEADLINE, || async {
        set_status(&sets, "web").await["readyReplicas"] == 3
    })
    .await;

    // Stable identity and one claim per pod.
    for ordinal in 0..3 {
        let pod = pods.get(&format!("web-{ordinal}")).await.unwrap();
        let labels = pod.labels();
        assert_eq!(
            labels["statefulset.kubernetes.io/pod-name"],
            format!("web-{ordinal}")
        );
        assert_eq!(labels["apps.kubernetes.io/pod-index"], ordinal.to_string());
        assert!(labels["controller-revision-hash"].starts_with("web-"));
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.hostname.as_deref(),
            Some(format!("web-{ordinal}").as_str())
        );
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let volume = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "data")
            .unwrap();
        assert_eq!(
            volume.persistent_volume_claim.unwrap().claim_name,
            format!("data-web-{ordinal}")
        );
    }
    assert_eq!(
        claim_names(&claims).await,
        ["data-web-0", "data-web-1", "data-web-2"]
    );
    let claim = claims.get("data-web-0").await.unwrap();
    assert_eq!(
        claim.labels()["app"],
        "web",
        "claims carry the selector's labels"
    );
    assert!(
        claim.owner_references().is_empty(),
        "whenDeleted Retain: no owner"
    );

    // Scale down: the highest ordinal goes first; whenScaled Delete takes its claim.
    let scale = json!({"spec": {"replicas": 1}});
    merge_patch(&sets, "web", scale).await;
    wait_for("web scales down to web-0", DEADLINE, || async {
        let names = pod_names(&pods, "web").await;
        assert!(
            names.contains(&"web-1".to_string()) || !names.contains(&"web-2".to_string()),
            "web-1 went before web-2: {names:?}"
        );
        names == ["web-0"]
    })
    .await;
    wait_for(
        "the scaled-down pods' claims are collected",
        DEADLINE,
        || async { claim_names(&claims).await == ["data-web-0"] },
    )
    .await;
    wait_event(&cluster.client, "ordered", "web", "SuccessfulDelete").await;
    wait_event(&cluster.client, "ordered", "web", "SuccessfulCreate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_roll_down_to_the_partition_and_on_delete_waits_for_deletions() {
    let cluster = Cluster::start(vec![NodeTemplate::new("sts-update-0")]).await;
    cluster.namespace("update").await;
    let sets: Api<StatefulSet> = cluster.api("update");
    let pods: Api<Pod> = cluster.api("update");
    let claims: Api<PersistentVolumeClaim> = cluster.api("update");
    let revisions: Api<ControllerRevision> = cluster.api("update");
    let params = PostParams::default();

    // A claim the API refuses (a name with capitals): a Warning, no pod, and the
    // controller goes on with the other sets.
    let mut broken = stateful_set("broken", json!({"replicas": 1}), true);
    broken
        .spec
        .as_mut()
        .unwrap()
        .volume_claim_templates
        .as_mut()
        .unwrap()[0]
        .metadata
        .name = Some("Bad_Name".into());
    sets.create(&params, &broken).await.unwrap();

    // Parallel: every pod at once, ready or not.
    sets.create(
        &params,
        &stateful_set("par", json!({"podManagementPolicy": "Parallel"}), false),
    )
    .await
    .unwrap();
    let spec = json!({
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
    });
    sets.create(&params, &stateful_set("db", spec, true))
        .await
        .unwrap();
    wait_for(
        "all of par's pods exist though none is ready",
        DEADLINE,
        || async { pod_names(&pods, "par").await == ["par-0", "par-1", "par-2"] },
    )
    .await;
    wait_for("db is ready", DEADLINE, || async {
        set_status(&sets, "db").await["readyReplicas"] == 3
    })
    .await;
    wait_event(&cluster.client, "update", "broken", "FailedCreate").await;
    assert!(
        pod_names(&pods, "broken").await.is_empty(),
        "no pod without its claim"
    );
    assert!(
        claim_names(&claims)
            .await
            .iter()
            .all(|n| !n.contains("broken"))
    );
    let first = set_status(&sets, "db").await;
    let first_revision = first["updateRevision"].as_str().unwrap().to_string();
    assert_eq!(first["currentRevision"], first_revision.as_str());

    // A new template rolls only down to the partition.
    let image = |image: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}}});
    merge_patch(&sets, "db", image("busybox:2")).await;
    wait_for("db-2 is updated", DEADLINE, || async {
        let status = set_status(&sets, "db").await;
        status["updatedReplicas"] == 1 && status["readyReplicas"] == 3
    })
    .await;
    let second = set_status(&sets, "db").await;
    let second_revision = second["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(second_revision, first_revision);
    assert_eq!(
        second["currentRevision"],
        first_revision.as_str(),
        "the rollout is not complete"
    );
    assert_eq!(
        revision_label(&pods.get("db-2").await.unwrap()),
        second_revision
    );
    for name in ["db-0", "db-1"] {
        assert_eq!(
            revision_label(&pods.get(name).await.unwrap()),
            first_revision,
            "{name} is below the partition"
        );
    }
    let mut numbers: Vec<(String, i64)> = revisions
        .list(&kube::api::ListParams::default().labels("app=db"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| (r.name_any(), r.revision))
        .collect();
    numbers.sort_by_key(|(_, n)| *n);
    assert_eq!(
        numbers,
        [(first_revision.clone(), 1), (second_revision.clone(), 2)]
    );

    // Partition 0: the rest follows, and kubectl sees the rollout finish.
    let partition = json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}});
    merge_patch(&sets, "db", partition).await;
    let rollout = tokio::task::spawn_blocking({
        let kubeconfig = cluster.server.kubeconfig_path();
        move || {
            std::process::Command::new(krust_e2e::kubectl_bin())
                .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
                .args([
                    "rollout",
                    "status",
                    "statefulset/db",
                    "-n",
                    "update",
                    "--timeout=30s",
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        rollout.status.success(),
        "{}",
        String::from_utf8_lossy(&rollout.stderr)
    );
    let done = set_status(&sets, "db").await;
    assert_eq!(done["currentRevision"], second_revision.as_str(), "{done}");
    assert_eq!(done["updatedReplicas"], 3, "{done}");

    // A rollback to the first template reuses its revision, renumbered as the newest.
    merge_patch(&sets, "db", image("busybox:1")).await;
    wait_for("db is rolled back", DEADLINE, || async {
        let status = set_status(&sets, "db").await;
        status["updateRevision"] == first_revision.as_str()
            && status["currentRevision"] == first_revision.as_str()
            && status["updatedReplicas"] == 3
            && status["readyReplicas"] == 3
    })
    .await;
    let renumbered = revisions.get(&first_revision).await.unwrap();
    assert_eq!(
        renumbered.revision, 3,
        "the rolled-back revision is the newest"
    );
    for name in ["db-0", "db-1", "db-2"] {
        let pod = pods.get(name).await.unwrap();
        assert_eq!(revision_label(&pod), first_revision);
        assert_eq!(
            pod.spec.unwrap().containers[0].image.as_deref(),
            Some("busybox:1")
        );
    }
    let settled = first_revision.clone();

    // OnDelete: a new template reaches only the pods someone deletes.
    let on_delete =
        json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}});
    merge_patch(&sets, "db", on_delete).await;
    merge_patch(&sets, "db", image("busybox:3")).await;
    wait_for("db has a third revision", DEADLINE, || async {
        let status = set_status(&sets, "db").await;
        status["updateRevision"] != settled.as_str()
            && status["observedGeneration"]
                == sets.get("db").await.unwrap().metadata.generation.unwrap()
    })
    .await;
    let third_revision = set_status(&sets, "db").await["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["db-0", "db-1", "db-2"] {
        assert_eq!(
            revision_label(&pods.get(name).await.unwrap()),
            settled,
            "{name} is left alone"
        );
    }
    let old_uid = pods.get("db-1").await.unwrap().uid();
    pods.delete("db-1", &DeleteParams::default()).await.unwrap();
    wait_for(
        "db-1 comes back with the new template",
        DEADLINE,
        || async {
            pods.get_opt("db-1").await.unwrap().is_some_and(|pod| {
                pod.uid() != old_uid
                    && revision_label(&pod) == third_revision
                    && pod.spec.as_ref().unwrap().containers[0].image.as_deref()
                        == Some("busybox:3")
            })
        },
    )
    .await;

    // whenDeleted Delete: the claims go with the set.
    assert_eq!(
        claim_names(&claims)
            .await
            .iter()
            .filter(|n| n.starts_with("data-db-"))
            .count(),
        3
    );
    sets.delete("db", &DeleteParams::default()).await.unwrap();
    wait_for("db's claims are collected with it", DEADLINE, || async {
        claim_names(&claims)
            .await
            .iter()
            .all(|n| !n.starts_with("data-db-"))
    })
    .await;
    assert!(
        claim_names(&claims)
            .await
            .iter()
            .any(|n| n.starts_with("data-par-")),
        "par's claims stay"
    );
}
