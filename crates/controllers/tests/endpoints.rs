//! The Endpoints and EndpointSlice controllers in a real `krust server`, with hollow
//! nodes running the pods: readiness, named target ports, terminating pods, headless
//! hostnames, zones, slices capped at 100 endpoints, cleanup with the Service, and
//! the mirroring of hand-written Endpoints.

mod common;

use std::collections::BTreeSet;

use common::eventually;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use krust_e2e::TestServer;
use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate, READY_ANNOTATION};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

struct Setup {
    server: TestServer,
    client: kube::Client,
    _nodes: HollowNodes,
}

async fn setup(namespace: &str) -> Setup {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    let node = NodeTemplate::new(format!("{namespace}-node"))
        .label("topology.kubernetes.io/zone", "zone-a");
    let nodes = HollowNodes::start(
        client.clone(),
        vec![node],
        HollowOptions {
            bind_pending: true,
            ..Default::default()
        },
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .unwrap();
    Setup {
        server,
        client,
        _nodes: nodes,
    }
}

async fn create<K>(api: &Api<K>, object: Value) -> K
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap()
}

fn web_pod(name: &str, app: &str, extra_metadata: Value, extra_spec: Value) -> Value {
    let mut pod = json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
    });
    for (key, value) in extra_metadata.as_object().unwrap() {
        pod["metadata"][key] = value.clone();
    }
    for (key, value) in extra_spec.as_object().unwrap() {
        pod["spec"][key] = value.clone();
    }
    pod
}

/// (ready IPs, not-ready IPs, ports) of an Endpoints object.
fn addresses(endpoints: &Endpoints) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<i32>) {
    let mut result = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for subset in endpoints.subsets.iter().flatten() {
        result
            .0
            .extend(subset.addresses.iter().flatten().map(|a| a.ip.clone()));
        result.1.extend(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| a.ip.clone()),
        );
        result
            .2
            .extend(subset.ports.iter().flatten().map(|p| p.port));
    }
    result
}

async fn pod_ip(pods: &Api<Pod>, name: &str) -> String {
    let ip_of = || async { pods.get(name).await.unwrap().status.and_then(|s| s.pod_ip) };
    eventually(&format!("{name} has an IP"), || async {
        ip_of().await.is_some()
    })
    .await;
    ip_of().await.unwrap()
}

async fn slices_of(slices: &Api<EndpointSlice>, service: &str) -> Vec<EndpointSlice> {
    slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_the_pods_a_service_selects() {
    let setup = setup("shop").await;
    let client = &setup.client;
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "shop");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "shop");

    create(
        &services,
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    )
    .await;
    create(&pods, web_pod("ready", "web", json!({}), json!({}))).await;
    create(
        &pods,
        web_pod(
            "unready",
            "web",
            json!({"annotations": {READY_ANNOTATION: "false"}}),
            json!({}),
        ),
    )
    .await;
    // A finalizer keeps this one terminating once deleted.
    create(
        &pods,
        web_pod(
            "leaving",
            "web",
            json!({"finalizers": ["krust.io/test-hold"]}),
            json!({}),
        ),
    )
    .await;
    create(&pods, web_pod("other", "other", json!({}), json!({}))).await;
    let ready = pod_ip(&pods, "ready").await;
    let unready = pod_ip(&pods, "unready").await;
    let leaving = pod_ip(&pods, "leaving").await;

    eventually(
        "the Endpoints list the selected pods by readiness",
        || async {
            endpoints.get_opt("web").await.unwrap().is_some_and(|e| {
                addresses(&e)
                    == (
                        BTreeSet::from([ready.clone(), leaving.clone()]),
                        BTreeSet::from([unready.clone()]),
                        BTreeSet::from([8080]),
                    )
            })
        },
    )
    .await;
    eventually("one slice lists the three pods", || async {
        let found = slices_of(&slices, "web").await;
        found.len() == 1 && found[0].endpoints.len() == 3
    })
    .await;
    let slice = &slices_of(&slices, "web").await[0];
    let labels = slice.metadata.labels.as_ref().unwrap();
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
    assert_eq!(
        slice.metadata.owner_references.as_ref().unwrap()[0].kind,
        "Service"
    );
    for endpoint in &slice.endpoints {
        assert_eq!(endpoint.zone.as_deref(), Some("zone-a"));
        assert_eq!(endpoint.node_name.as_deref(), Some("shop-node"));
    }

    // A terminating pod leaves the Endpoints and shows as terminating in its slice.
    pods.delete("leaving", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the terminating pod is marked so", || async {
        let found = slices_of(&slices, "web").await;
        found.iter().flat_map(|s| &s.endpoints).any(|e| {
            let c = e.conditions.as_ref().unwrap();
            e.addresses == [leaving.clone()]
                && c.terminating == Some(true)
                && c.ready == Some(false)
                && c.serving == Some(true)
        })
    })
    .await;
    eventually("the Endpoints drop the terminating pod", || async {
        let (ready_ips, _, _) = addresses(&endpoints.get("web").await.unwrap());
        ready_ips == BTreeSet::from([ready.clone()])
    })
    .await;
    pods.patch(
        "leaving",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();

    // A pod that becomes ready moves to the ready addresses.
    pods.patch(
        "unready",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {READY_ANNOTATION: "true"}}})),
    )
    .await
    .unwrap();
    eventually("the Endpoints list the now ready pod", || async {
        let (ready_ips, not_ready, _) = addresses(&endpoints.get("web").await.unwrap());
        ready_ips == BTreeSet::from([ready.clone(), unready.clone()]) && not_ready.is_empty()
    })
    .await;
    let server = &setup.server;
    let output =
        tokio::task::block_in_place(|| server.kubectl(["get", "endpoints", "web", "-n", "shop"]));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&format!("{ready}:8080")), "{text}");

    // Headless Services name their pods by hostname.
    create(
        &services,
        json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"},
            "ports": [{"port": 5432}]}}),
    )
    .await;
    create(
        &pods,
        web_pod(
            "db-0",
            "db",
            json!({}),
            json!({"hostname": "db-0", "subdomain": "db"}),
        ),
    )
    .await;
    eventually(
        "the headless Service's endpoints carry the hostname",
        || async {
            let e = endpoints.get_opt("db").await.unwrap();
            let has_hostname = e.as_ref().is_some_and(|e| {
                e.subsets
                    .iter()
                    .flatten()
                    .flat_map(|s| s.addresses.iter().flatten())
                    .any(|a| a.hostname.as_deref() == Some("db-0"))
            });
            let found = slices_of(&slices, "db").await;
            has_hostname
                && found
                    .iter()
                    .flat_map(|s| &s.endpoints)
                    .any(|e| e.hostname.as_deref() == Some("db-0"))
                && found.iter().all(|s| {
                    s.metadata
                        .labels
                        .as_ref()
                        .unwrap()
                        .contains_key("service.kubernetes.io/headless")
                })
        },
    )
    .await;

    // publishNotReadyAddresses lists pods before they are ready.
    create(
        &pods,
        web_pod(
            "early",
            "early",
            json!({"annotations": {READY_ANNOTATION: "false"}}),
            json!({}),
        ),
    )
    .await;
    create(
        &services,
        json!({"metadata": {"name": "early"}, "spec": {"selector": {"app": "early"},
            "publishNotReadyAddresses": true, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    let early = pod_ip(&pods, "early").await;
    eventually("the not ready pod is published", || async {
        endpoints
            .get_opt("early")
            .await
            .unwrap()
            .is_some_and(|e| addresses(&e).0 == BTreeSet::from([early.clone()]))
    })
    .await;

    // Endpoints of no Service are left alone.
    create(
        &endpoints,
        json!({"metadata": {"name": "orphan"},
               "subsets": [{"addresses": [{"ip": "10.9.9.9"}], "ports": [{"port": 80}]}]}),
    )
    .await;

    // The Service goes, and its endpoints with it.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Endpoints and slices are gone", || async {
        endpoints.get_opt("web").await.unwrap().is_none()
            && slices_of(&slices, "web").await.is_empty()
    })
    .await;
    assert!(endpoints.get_opt("orphan").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_hold_at_most_a_hundred_endpoints() {
    let setup = setup("crowd").await;
    let client = &setup.client;
    let services: Api<Service> = Api::namespaced(client.clone(), "crowd");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "crowd");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "crowd");
    create(
        &services,
        json!({"metadata": {"name": "crowd"}, "spec": {"selector": {"app": "crowd"},
            "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    // Before any pod: one empty placeholder slice.
    eventually("the placeholder slice exists", || async {
        let found = slices_of(&slices, "crowd").await;
        found.len() == 1 && found[0].endpoints.is_empty()
    })
    .await;
    let creates = (0..120).map(|i| {
        let pods = pods.clone();
        async move {
            create(
                &pods,
                web_pod(&format!("p{i}"), "crowd", json!({}), json!({})),
            )
            .await
        }
    });
    futures::future::join_all(creates).await;
    eventually("120 endpoints in slices of 100 and 20", || async {
        let mut sizes: Vec<usize> = slices_of(&slices, "crowd")
            .await
            .iter()
            .map(|s| s.endpoints.len())
            .collect();
        sizes.sort();
        sizes == [20, 100]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_endpoints_of_a_service_without_selector_are_mirrored() {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    create(
        &services,
        json!({"metadata": {"name": "outside"}, "spec": {"ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
    let written = |ip: &str| {
        json!({"metadata": {"name": "outside", "labels": {"team": "a"}},
               "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "http", "port": 8080}]}]})
    };
    create(&endpoints, written("10.9.0.1")).await;
    let mirrored_ips = || async {
        slices_of(&slices, "outside")
            .await
            .iter()
            .filter(|s| {
                s.metadata.labels.as_ref().unwrap()["endpointslice.kubernetes.io/managed-by"]
                    == "endpointslicemirroring-controller.k8s.io"
            })
            .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.clone()))
            .collect::<Vec<_>>()
    };
    eventually("the Endpoints are mirrored", || async {
        mirrored_ips().await == ["10.9.0.1"]
    })
    .await;
    // The Endpoints controller leaves them alone (no selector).
    assert_eq!(
        endpoints.get("outside").await.unwrap().subsets.unwrap()[0]
            .addresses
            .as_ref()
            .unwrap()[0]
            .ip,
        "10.9.0.1"
    );

    let mut current = endpoints.get("outside").await.unwrap();
    current.subsets.as_mut().unwrap()[0]
        .addresses
        .as_mut()
        .unwrap()[0]
        .ip = "10.9.0.2".into();
    endpoints
        .replace("outside", &PostParams::default(), &current)
        .await
        .unwrap();
    eventually("the change is mirrored", || async {
        mirrored_ips().await == ["10.9.0.2"]
    })
    .await;
    endpoints
        .delete("outside", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the mirrored slices go with the Endpoints", || async {
        slices_of(&slices, "outside").await.is_empty()
    })
    .await;
}
