//! Storage against a real server with hollow nodes (no containers): the default
//! StorageClass and the storage admission plugins, static binding and reclaim
//! policies, the Pending reasons of claims that cannot be served, WaitForFirstConsumer
//! placing the pod where its local volume is, and in-use protection of a claim.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use krust_e2e::TestServer;
use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);

async fn server() -> (TestServer, Client) {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    (server, client)
}

fn claim(name: &str, class: Option<&str>, modes: &[&str], size: &str) -> PersistentVolumeClaim {
    let mut spec = json!({"accessModes": modes, "resources": {"requests": {"storage": size}}});
    if let Some(class) = class {
        spec["storageClassName"] = json!(class);
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn host_path_volume(name: &str, class: &str, policy: &str, size: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                 "capacity": {"storage": size}, "persistentVolumeReclaimPolicy": policy,
                 "hostPath": {"path": format!("/tmp/{name}")}},
    }))
    .unwrap()
}

/// A name no other run of the test uses (the objects are cluster-scoped).
fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 4];
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut random, &mut bytes).unwrap();
    format!("{prefix}-{:08x}", u32::from_le_bytes(bytes))
}

async fn wait_claim(
    api: &Api<PersistentVolumeClaim>,
    name: &str,
    phase: &str,
) -> PersistentVolumeClaim {
    let wanted = phase.to_string();
    let condition = await_condition(
        api.clone(),
        name,
        move |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref()?.phase.as_deref()) == Some(wanted.as_str())
        },
    );
    tokio::time::timeout(DEADLINE, condition)
        .await
        .unwrap_or_else(|_| panic!("claim {name} never became {phase}"))
        .unwrap()
        .unwrap()
}

async fn wait_volume(api: &Api<PersistentVolume>, name: &str, phase: &str) -> PersistentVolume {
    let wanted = phase.to_string();
    let condition = await_condition(api.clone(), name, move |v: Option<&PersistentVolume>| {
        v.and_then(|v| v.status.as_ref()?.phase.as_deref()) == Some(wanted.as_str())
    });
    tokio::time::timeout(DEADLINE, condition)
        .await
        .unwrap_or_else(|_| panic!("volume {name} never became {phase}"))
        .unwrap()
        .unwrap()
}

/// Waits for an Event about `object` with `reason` and returns its message.
async fn wait_event(client: &Client, namespace: &str, object: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let listed = events.list(&ListParams::default()).await.unwrap();
        if let Some(event) = listed.items.iter().find(|e| {
            e.involved_object.name.as_deref() == Some(object) && e.reason.as_deref() == Some(reason)
        }) {
            return event.message.clone().unwrap_or_default();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} event about {object}; events: {:?}",
            listed
                .items
                .iter()
                .map(|e| (
                    e.involved_object.name.clone(),
                    e.reason.clone(),
                    e.message.clone()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_default_class_and_protection_finalizers_are_added_on_create() {
    let (_server, client) = server().await;
    let class = Api::<StorageClass>::all(client.clone())
        .get("local-path")
        .await
        .unwrap();
    assert_eq!(class.provisioner, "krust.io/local-path");
    assert_eq!(
        class.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
    assert_eq!(class.reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(
        class
            .annotations()
            .get("storageclass.kubernetes.io/is-default-class")
            .map(String::as_str),
        Some("true")
    );

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let defaulted = claims
        .create(
            &PostParams::default(),
            &claim("defaulted", None, &["ReadWriteOnce"], "1Gi"),
        )
        .await
        .unwrap();
    assert_eq!(
        defaulted.spec.unwrap().storage_class_name.as_deref(),
        Some("local-path")
    );
    assert_eq!(
        defaulted.metadata.finalizers.unwrap(),
        ["kubernetes.io/pvc-protection"]
    );
    // An explicit "" asks for no class and keeps it.
    let classless = claims
        .create(
            &PostParams::default(),
            &claim("classless", Some(""), &["ReadWriteOnce"], "1Gi"),
        )
        .await
        .unwrap();
    assert_eq!(
        classless.spec.unwrap().storage_class_name.as_deref(),
        Some("")
    );

    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let name = unique("pv");
    let volume = volumes
        .create(
            &PostParams::default(),
            &host_path_volume(&name, "manual", "Retain", "1Gi"),
        )
        .await
        .unwrap();
    assert_eq!(
        volume.metadata.finalizers.clone().unwrap(),
        ["kubernetes.io/pv-protection"]
    );
    // A volume nobody holds is Available, and goes when deleted (protection lifted).
    wait_volume(&volumes, &name, "Available").await;
    volumes
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let volume_uid = volume.uid().unwrap();
    let gone = await_condition(volumes.clone(), &name, conditions::is_deleted(&volume_uid));
    tokio::time::timeout(DEADLINE, gone)
        .await
        .expect("unbound volume kept")
        .unwrap();

    // Without a default class, a claim gets none.
    let mut plain = class.clone();
    plain.metadata = Default::default();
    plain.metadata.name = Some("not-default".into());
    let classes = Api::<StorageClass>::all(client.clone());
    classes
        .delete("local-path", &DeleteParams::default())
        .await
        .unwrap();
    classes
        .create(&PostParams::default(), &plain)
        .await
        .unwrap();
    let none = claims
        .create(
            &PostParams::default(),
            &claim("no-default", None, &["ReadWriteOnce"], "1Gi"),
        )
        .await
        .unwrap();
    assert_eq!(none.spec.unwrap().storage_class_name, None);
}

#[tokio::test]
async fn static_volumes_bind_and_are_reclaimed_by_policy() {
    let (_server, client) = server().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    // The smaller of two fitting volumes is taken; a too small one never.
    let (small, big, tiny) = (unique("small"), unique("big"), unique("tiny"));
    for (name, size) in [(&small, "2Gi"), (&big, "10Gi"), (&tiny, "100Mi")] {
        volumes
            .create(
                &PostParams::default(),
                &host_path_volume(name, "manual", "Retain", size),
            )
            .await
            .unwrap();
    }
    // Only Available volumes are candidates (as upstream): wait for all three.
    for name in [&small, &big, &tiny] {
        wait_volume(&volumes, name, "Available").await;
    }
    claims
        .create(
            &PostParams::default(),
            &claim("kept", Some("manual"), &["ReadWriteOnce"], "1Gi"),
        )
        .await
        .unwrap();
    let bound = wait_claim(&claims, "kept", "Bound").await;
    assert_eq!(
        bound.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(small.as_str())
    );
    assert_eq!(
        bound
            .annotations()
            .get("pv.kubernetes.io/bind-completed")
            .map(String::as_str),
        Some("yes")
    );
    let capacity = &bound.status.as_ref().unwrap().capacity.as_ref().unwrap()["storage"];
    assert_eq!(capacity.0, "2Gi");
    let volume = wait_volume(&volumes, &small, "Bound").await;
    let reference = volume.spec.unwrap().claim_ref.unwrap();
    assert_eq!(reference.name.as_deref(), Some("kept"));
    assert_eq!(reference.uid, bound.metadata.uid);

    // Retain: the claim goes, the volume stays Released with its claimRef.
    claims
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    let released = wait_volume(&volumes, &small, "Released").await;
    assert!(released.spec.unwrap().claim_ref.is_some());
    assert!(
        released
            .status
            .unwrap()
            .last_phase_transition_time
            .is_some()
    );

    // Delete on a volume no provisioner made: upstream marks it Failed.
    let doomed = unique("doomed");
    volumes
        .create(
            &PostParams::default(),
            &host_path_volume(&doomed, "other", "Delete", "1Gi"),
        )
        .await
        .unwrap();
    claims
        .create(
            &PostParams::default(),
            &claim("short", Some("other"), &["ReadWriteOnce"], "1Gi"),
        )
        .await
        .unwrap();
    wait_claim(&claims, "short", "Bound").await;
    claims
        .delete("short", &DeleteParams::default())
        .await
        .unwrap();
    let failed = wait_volume(&volumes, &doomed, "Failed").await;
    assert!(
        failed
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("no deletable volume plugin matched")
    );

    // A claim naming its volume gets that one.
    let named = unique("named");
    volumes
        .create(
            &PostParams::default(),
            &host_path_volume(&named, "manual", "Retain", "5Gi"),
        )
        .await
        .unwrap();
    let mut wants = claim("wants-named", Some("manual"), &["ReadWriteOnce"], "1Gi");
    wants.spec.as_mut().unwrap().volume_name = Some(named.clone());
    claims.create(&PostParams::default(), &wants).await.unwrap();
    let bound = wait_claim(&claims, "wants-named", "Bound").await;
    assert_eq!(bound.spec.unwrap().volume_name, Some(named));
    let tiny_volume = volumes.get(&tiny).await.unwrap();
    assert_eq!(
        tiny_volume.status.unwrap().phase.as_deref(),
        Some("Available")
    );
    assert_eq!(
        volumes
            .get(&big)
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Available")
    );
}

#[tokio::test]
async fn claims_that_cannot_be_served_say_why_in_events() {
    let (_server, client) = server().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    claims
        .create(
            &PostParams::default(),
            &claim("no-such-class", Some("nope"), &["ReadWriteOnce"], "1Gi"),
        )
        .await
        .unwrap();
    let message = wait_event(&client, "default", "no-such-class", "ProvisioningFailed").await;
    assert_eq!(message, "storageclass.storage.k8s.io \"nope\" not found");
    claims
        .create(
            &PostParams::default(),
            &claim("waits", None, &["ReadWriteOnce"], "1Gi"),
        )
        .await
        .unwrap();
    let message = wait_event(&client, "default", "waits", "WaitForFirstConsumer").await;
    assert_eq!(
        message,
        "waiting for first consumer to be created before binding"
    );
    claims
        .create(
            &PostParams::default(),
            &claim("nothing", Some(""), &["ReadWriteMany"], "1Gi"),
        )
        .await
        .unwrap();
    let message = wait_event(&client, "default", "nothing", "FailedBinding").await;
    assert!(
        message.contains("no persistent volumes available"),
        "{message}"
    );
    for name in ["no-such-class", "waits", "nothing"] {
        assert_eq!(
            wait_claim(&claims, name, "Pending")
                .await
                .spec
                .unwrap()
                .volume_name,
            None
        );
    }

    // Bad input is refused by validation and changes nothing.
    let mut bad = claim(
        "bad-mode",
        None,
        &["ReadWriteOncePod", "ReadWriteMany"],
        "1Gi",
    );
    let error = claims
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref e) if e.code == 422),
        "{error}"
    );
    bad.spec.as_mut().unwrap().access_modes = Some(vec!["Sometimes".into()]);
    let error = claims
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref e) if e.code == 422),
        "{error}"
    );
    assert!(claims.get_opt("bad-mode").await.unwrap().is_none());

    // A claim's access modes cannot change after creation.
    let patch = json!({"spec": {"accessModes": ["ReadWriteOnce"]}});
    let error = claims
        .patch("nothing", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref e) if e.code == 422 && e.message.contains("spec is immutable")),
        "{error}"
    );
    let modes = claims
        .get("nothing")
        .await
        .unwrap()
        .spec
        .unwrap()
        .access_modes;
    assert_eq!(modes, Some(vec!["ReadWriteMany".to_string()]));
}

fn pod_with_claim(name: &str, claim: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
    }))
    .unwrap()
}

fn local_volume(name: &str, class: &str, node: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Gi"}, "persistentVolumeReclaimPolicy": "Retain",
            "local": {"path": "/mnt/disks/one"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
    })
}

#[tokio::test]
async fn wait_for_first_consumer_puts_the_pod_where_its_volume_is_and_protects_the_claim() {
    let (_server, client) = server().await;
    let nodes = [unique("hollow-a"), unique("hollow-b")];
    let templates = nodes.iter().map(NodeTemplate::new).collect();
    let _hollow = HollowNodes::start(client.clone(), templates, HollowOptions::default()).await;
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "local-disks"}, "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Retain",
    }))
    .unwrap();
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let volume_name = unique("disk");
    let volume: PersistentVolume =
        serde_json::from_value(local_volume(&volume_name, "local-disks", &nodes[1])).unwrap();
    volumes
        .create(&PostParams::default(), &volume)
        .await
        .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    claims
        .create(
            &PostParams::default(),
            &claim("disk", Some("local-disks"), &["ReadWriteOnce"], "1Gi"),
        )
        .await
        .unwrap();
    // Not bound before a pod needs it.
    wait_event(&client, "default", "disk", "WaitForFirstConsumer").await;
    assert_eq!(
        claims.get("disk").await.unwrap().spec.unwrap().volume_name,
        None
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod_with_claim("user", "disk"))
        .await
        .unwrap();
    let running = await_condition(pods.clone(), "user", conditions::is_pod_running());
    tokio::time::timeout(DEADLINE, running)
        .await
        .expect("pod never ran")
        .unwrap();
    let pod = pods.get("user").await.unwrap();
    assert_eq!(
        pod.spec.unwrap().node_name.as_deref(),
        Some(nodes[1].as_str())
    );
    let bound = wait_claim(&claims, "disk", "Bound").await;
    assert_eq!(
        bound.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(volume_name.as_str())
    );
    assert_eq!(
        bound
            .annotations()
            .get("volume.kubernetes.io/selected-node"),
        Some(&nodes[1])
    );

    // A pod for a claim that does not exist waits, saying so.
    pods.create(&PostParams::default(), &pod_with_claim("orphan", "missing"))
        .await
        .unwrap();
    let message = wait_event(&client, "default", "orphan", "FailedScheduling").await;
    assert!(
        message.contains("persistentvolumeclaim \"missing\" not found"),
        "{message}"
    );

    // In use: deleting the claim leaves it Terminating until the pod is gone.
    claims
        .delete("disk", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = claims.get("disk").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    // An idle claim deleted after it goes at once: by then the protection
    // controller has looked at the claim in use too, and kept it.
    let idle = claims
        .create(
            &PostParams::default(),
            &claim("idle", Some(""), &["ReadWriteOnce"], "1Gi"),
        )
        .await
        .unwrap();
    claims
        .delete("idle", &DeleteParams::default())
        .await
        .unwrap();
    let idle_uid = idle.uid().unwrap();
    let idle_gone = await_condition(claims.clone(), "idle", conditions::is_deleted(&idle_uid));
    tokio::time::timeout(DEADLINE, idle_gone)
        .await
        .expect("an idle claim was kept")
        .unwrap();
    assert!(
        claims.get_opt("disk").await.unwrap().is_some(),
        "a claim in use was removed"
    );
    pods.delete("user", &DeleteParams::default()).await.unwrap();
    let claim_uid = bound.uid().unwrap();
    let gone = await_condition(claims.clone(), "disk", conditions::is_deleted(&claim_uid));
    tokio::time::timeout(DEADLINE, gone)
        .await
        .expect("claim never went")
        .unwrap();
    // Retain: the volume stays, Released.
    wait_volume(&volumes, &volume_name, "Released").await;
}
