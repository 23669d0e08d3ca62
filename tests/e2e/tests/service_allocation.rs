//! Service ClusterIP and NodePort allocation against real `krust server`s: the
//! `kubernetes` Service, requested and random values, 422s for taken or
//! out-of-range values (with nothing stored), release on delete, survival across a
//! restart, IP family requests the IPv4 service network cannot meet refused as
//! upstream refuses them, and concurrent creates (also from two servers sharing one etcd) that
//! never share a value; every live server of one datastore behind the `kubernetes`
//! Service and `kube-dns`, all with the CA and service account key of the first.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use krust_e2e::{EtcdServer, ServerOptions, TestServer};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

fn service(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn node_port_service(name: &str) -> Service {
    service(
        name,
        json!({"type": "NodePort", "selector": {"app": name}, "ports": [{"port": 80}]}),
    )
}

fn cluster_ip(service: &Service) -> String {
    service.spec.as_ref().unwrap().cluster_ip.clone().unwrap()
}

fn node_port(service: &Service) -> i32 {
    service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap()
}

/// The 422's status message and first cause, and that it is a 422.
fn rejection(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "expected 422, got {status:?}");
            status.message
        }
        other => panic!("expected an API error, got {other}"),
    }
}

async fn start(options: ServerOptions) -> (TestServer, kube::Client) {
    let server = tokio::task::spawn_blocking(move || TestServer::start_with(options))
        .await
        .unwrap();
    let client = server.client().await;
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_service_points_at_the_api_server() {
    let (server, client) = start(ServerOptions::default()).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let kubernetes = services.get("kubernetes").await.unwrap();
    let spec = kubernetes.spec.as_ref().unwrap();
    assert_eq!(cluster_ip(&kubernetes), "10.43.0.1");
    assert_eq!(
        spec.cluster_ips.as_deref(),
        Some(&["10.43.0.1".to_string()][..])
    );
    assert_eq!(spec.ip_families.as_deref(), Some(&["IPv4".to_string()][..]));
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
    assert_eq!(spec.ports.as_ref().unwrap()[0].port, 443);

    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let subset = &endpoints.get("kubernetes").await.unwrap().subsets.unwrap()[0];
    assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "127.0.0.1");
    assert_eq!(
        subset.ports.as_ref().unwrap()[0].port,
        i32::from(server.port())
    );
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice = slices.get("kubernetes").await.unwrap();
    assert_eq!(slice.endpoints[0].addresses, ["127.0.0.1"]);
    assert_eq!(
        slice.ports.as_ref().unwrap()[0].port,
        Some(i32::from(server.port()))
    );

    // kubectl sees the same.
    let output = tokio::task::block_in_place(|| {
        server.kubectl([
            "get",
            "service",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
    });
    assert_eq!(String::from_utf8_lossy(&output.stdout), "10.43.0.1");
}

/// The addresses and port behind the `kubernetes` Endpoints, and the addresses of
/// its EndpointSlice.
async fn kubernetes_endpoints(client: &kube::Client) -> (Vec<String>, Option<i32>, Vec<String>) {
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let subsets = endpoints
        .get("kubernetes")
        .await
        .unwrap()
        .subsets
        .unwrap_or_default();
    let addresses = subsets
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect();
    let port = subsets
        .first()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .map(|p| p.port);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice = slices.get("kubernetes").await.unwrap();
    let sliced = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.clone())
        .collect();
    (addresses, port, sliced)
}

/// The names of the cluster DNS slices behind `kube-dns`.
async fn dns_slices(client: &kube::Client) -> Vec<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let mut names: Vec<String> = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=kube-dns"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    names.sort();
    names
}

/// Two servers on one etcd (at 127.0.0.1 and 127.0.0.2, on one port): both are
/// behind the `kubernetes` Service and `kube-dns`; one that stops cleanly is taken
/// out at once, one that is killed when its endpoint Lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_live_server_of_one_datastore_is_behind_the_kubernetes_service() {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap();
    let datastore = Some(etcd.url());
    let (first, client) = start(ServerOptions {
        datastore: datastore.clone(),
        ..Default::default()
    })
    .await;
    let port = first.port();
    let peer = |bind: [u8; 4]| {
        let options = ServerOptions {
            datastore: datastore.clone(),
            bind_address: Some(bind.into()),
            port: Some(port),
            ..Default::default()
        };
        tokio::task::spawn_blocking(move || TestServer::start_with(options))
    };
    let mut second = peer([127, 0, 0, 2]).await.unwrap();
    let mut third = peer([127, 0, 0, 3]).await.unwrap();
    let wait_for = |servers: &'static [&'static str], within: Duration| {
        let client = client.clone();
        async move {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let (addresses, at, sliced) = kubernetes_endpoints(&client).await;
                let dns = dns_slices(&client).await;
                let wanted_dns: Vec<String> = servers
                    .iter()
                    .map(|ip| format!("kube-dns-{}", ip.replace('.', "-")))
                    .collect();
                if addresses == servers && sliced == servers && dns == wanted_dns {
                    assert_eq!(at, Some(i32::from(port)));
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "wanted {servers:?}; endpoints {addresses:?}, slice {sliced:?}, dns {dns:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_for(
        &["127.0.0.1", "127.0.0.2", "127.0.0.3"],
        Duration::from_secs(30),
    )
    .await;
    // One cluster: the later servers adopted the first one's CA and service account
    // key from the datastore, so the first's admin kubeconfig works against every
    // server, and a token the first issued is accepted by another.
    let ca = |server: &TestServer| {
        std::fs::read_to_string(server.data_dir().join("tls/ca.crt")).unwrap()
    };
    assert_eq!(ca(&first), ca(&second));
    assert_eq!(ca(&first), ca(&third));
    let token = first.kubectl_ok(["create", "token", "default", "-n", "default"]);
    let who = tokio::task::block_in_place(|| {
        first.kubectl_ok([
            &format!("--server={}", third.url()),
            "get",
            "namespace",
            "default",
            "-o",
            "name",
        ]);
        first.kubectl_ok([
            "--kubeconfig=/dev/null".to_string(),
            format!("--server={}", second.url()),
            format!(
                "--certificate-authority={}",
                first.data_dir().join("tls/ca.crt").display()
            ),
            format!("--token={}", token.trim()),
            "auth".into(),
            "whoami".into(),
            "-o".into(),
            "jsonpath={.status.userInfo.username}".into(),
        ])
    });
    assert_eq!(who.trim(), "system:serviceaccount:default:default");
    // Sooner than its Lease (15 s, renewed every 5 s) could run out.
    tokio::task::block_in_place(|| second.stop());
    wait_for(&["127.0.0.1", "127.0.0.3"], Duration::from_secs(8)).await;
    tokio::task::block_in_place(|| third.kill9());
    wait_for(&["127.0.0.1"], Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_values_are_checked_and_released_on_delete() {
    let (mut server, client) = start(ServerOptions {
        extra_args: vec![
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--service-node-port-range=31000-31099".into(),
        ],
        ..Default::default()
    })
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let create = |name: &str, spec: Value| {
        let services = services.clone();
        let object = service(name, spec);
        async move { services.create(&PostParams::default(), &object).await }
    };

    let first = create(
        "first",
        json!({"type": "NodePort", "clusterIP": "10.96.0.50", "ports": [{"port": 80, "nodePort": 31050}]}),
    )
    .await
    .unwrap();
    assert_eq!(cluster_ip(&first), "10.96.0.50");
    assert_eq!(node_port(&first), 31050);

    // Taken and out-of-range values: 422, nothing stored.
    let message = rejection(
        create(
            "ip-taken",
            json!({"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        message.contains("provided IP is already allocated"),
        "{message}"
    );
    let message = rejection(
        create(
            "ip-outside",
            json!({"clusterIP": "10.43.0.9", "ports": [{"port": 80}]}),
        )
        .await
        .unwrap_err(),
    );
    assert!(message.contains("not in the valid range"), "{message}");
    assert!(message.contains("10.96.0.0/24"), "{message}");
    let message = rejection(
        create(
            "port-taken",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31050}]}),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        message.contains("provided port is already allocated"),
        "{message}"
    );
    let message = rejection(
        create(
            "port-outside",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]}),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        message.contains(
            "provided port is not in the valid range. The range of valid ports is 31000-31099"
        ),
        "{message}"
    );
    for name in ["ip-taken", "ip-outside", "port-taken", "port-outside"] {
        assert!(
            services.get_opt(name).await.unwrap().is_none(),
            "{name} was stored"
        );
    }
    // A failed create releases what it had claimed (port-outside had claimed a
    // ClusterIP before its port was refused): only the kubernetes Service's and
    // first's addresses are held.
    let addresses: Api<k8s_openapi::api::networking::v1::IPAddress> = Api::all(client.clone());
    let held: BTreeSet<String> = addresses
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.metadata.name.unwrap())
        .collect();
    assert_eq!(
        held,
        BTreeSet::from(["10.96.0.1".into(), "10.96.0.50".into()])
    );

    // A dry run shows what would be allocated, refuses what would be refused, and
    // claims nothing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let tentative = services
        .create(
            &dry,
            &service("dry", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    assert!(cluster_ip(&tentative).starts_with("10.96.0."));
    assert!((31000..=31099).contains(&node_port(&tentative)));
    let message = rejection(
        services
            .create(
                &dry,
                &service(
                    "dry",
                    json!({"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}),
                ),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains("provided IP is already allocated"),
        "{message}"
    );
    assert!(services.get_opt("dry").await.unwrap().is_none());
    let after: BTreeSet<String> = addresses
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.metadata.name.unwrap())
        .collect();
    assert_eq!(after, held, "a dry run claimed an address");

    // Headless and ExternalName Services get no ClusterIP.
    let headless = create(
        "headless",
        json!({"clusterIP": "None", "selector": {"app": "x"}, "ports": [{"port": 80}]}),
    )
    .await
    .unwrap();
    assert_eq!(cluster_ip(&headless), "None");
    let external = create(
        "external",
        json!({"type": "ExternalName", "externalName": "example.com"}),
    )
    .await
    .unwrap();
    assert_eq!(external.spec.as_ref().unwrap().cluster_ip, None);

    // The values survive a restart...
    tokio::task::block_in_place(|| server.restart());
    let client = server.client().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let retry = service(
        "ip-taken",
        json!({"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}),
    );
    let message = rejection(
        services
            .create(&PostParams::default(), &retry)
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains("provided IP is already allocated"),
        "{message}"
    );

    // ...and are free again once their Service is deleted.
    services
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    let again = services
        .create(
            &PostParams::default(),
            &service(
                "again",
                json!({"type": "NodePort", "clusterIP": "10.96.0.50", "ports": [{"port": 80, "nodePort": 31050}]}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(cluster_ip(&again), "10.96.0.50");
    assert_eq!(node_port(&again), 31050);

    // An update asking for a taken NodePort is refused and changes nothing.
    services
        .create(
            &PostParams::default(),
            &service(
                "holder",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31060}]}),
            ),
        )
        .await
        .unwrap();
    let mut grab = again.clone();
    grab.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(31060);
    let message = rejection(
        services
            .replace("again", &PostParams::default(), &grab)
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains("provided port is already allocated"),
        "{message}"
    );
    assert_eq!(node_port(&services.get("again").await.unwrap()), 31050);
    assert_eq!(node_port(&services.get("holder").await.unwrap()), 31060);
    services
        .delete("holder", &DeleteParams::default())
        .await
        .unwrap();

    // The ClusterIP may not change.
    let mut moved = again.clone();
    moved.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.60".into());
    moved.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.96.0.60".into()]);
    let message = rejection(
        services
            .replace("again", &PostParams::default(), &moved)
            .await
            .unwrap_err(),
    );
    assert!(message.contains("may not change once set"), "{message}");

    // Changing the type to ClusterIP gives the NodePort back.
    let mut changed = again.clone();
    changed.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    changed.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = None;
    services
        .replace("again", &PostParams::default(), &changed)
        .await
        .unwrap();
    let reuse = services
        .create(
            &PostParams::default(),
            &service(
                "reuse",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31050}]}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(node_port(&reuse), 31050);

    // To ExternalName and back, as the conformance tests do: the ClusterIP and
    // NodePort are given back, then new ones taken.
    let mut external = reuse.clone();
    let spec = external.spec.as_mut().unwrap();
    spec.type_ = Some("ExternalName".into());
    spec.external_name = Some("example.com".into());
    spec.cluster_ip = Some(String::new());
    let external = services
        .replace("reuse", &PostParams::default(), &external)
        .await
        .unwrap();
    let spec = external.spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ip, None);
    assert_eq!(spec.cluster_ips, None);
    assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, None);
    let taken = services
        .create(
            &PostParams::default(),
            &service(
                "taker",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31050}]}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(node_port(&taken), 31050);
    let mut back = external.clone();
    let spec = back.spec.as_mut().unwrap();
    spec.type_ = Some("NodePort".into());
    spec.external_name = None;
    let back = services
        .replace("reuse", &PostParams::default(), &back)
        .await
        .unwrap();
    assert!(cluster_ip(&back).starts_with("10.96.0."));
    assert_ne!(node_port(&back), 31050);
}

/// Creates `count` NodePort Services at once on each client, and checks that no two
/// got the same ClusterIP or NodePort.
async fn create_concurrently(clients: &[kube::Client], count: usize) {
    let creates = clients.iter().enumerate().flat_map(|(server, client)| {
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        (0..count).map(move |i| {
            let services = services.clone();
            async move {
                services
                    .create(
                        &PostParams::default(),
                        &node_port_service(&format!("s{server}-{i}")),
                    )
                    .await
                    .unwrap()
            }
        })
    });
    let created = join_all(creates).await;
    let ips: BTreeSet<String> = created.iter().map(cluster_ip).collect();
    let ports: BTreeSet<i32> = created.iter().map(node_port).collect();
    assert_eq!(ips.len(), created.len(), "two Services share a ClusterIP");
    assert_eq!(ports.len(), created.len(), "two Services share a NodePort");
    assert!(!ips.contains("10.43.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_share_a_value_on_sqlite() {
    let (_server, client) = start(ServerOptions::default()).await;
    create_concurrently(&[client], 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_on_two_servers_sharing_etcd_never_share_a_value() {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap();
    // A tiny range makes collisions between the two servers certain to be tried.
    let options = ServerOptions {
        datastore: Some(etcd.url()),
        extra_args: vec![
            "--service-cluster-ip-range=10.97.0.0/26".into(),
            "--service-node-port-range=32000-32060".into(),
        ],
        ..Default::default()
    };
    let (_first, first_client) = start(options.clone()).await;
    let (_second, second_client) = start(options).await;
    create_concurrently(&[first_client, second_client], 25).await;
}

/// IP family requests on this single-stack IPv4 service network, as upstream
/// answers them: dual-stack required, IPv6, or SingleStack with two families are
/// 422s that store nothing; PreferDualStack gets IPv4 alone; a headless Service
/// without selector may name both families.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_family_requests_the_ipv4_cluster_cannot_meet_are_refused() {
    let (_server, client) = start(ServerOptions::default()).await;
    let services: Api<Service> = Api::namespaced(client, "default");
    let ports = json!([{"port": 80}]);
    for (name, spec, field, message) in [
        (
            "require-dual",
            json!({"ipFamilyPolicy": "RequireDualStack", "selector": {"a": "b"}, "ports": ports}),
            "spec.ipFamilyPolicy",
            "this cluster is not configured for dual-stack services",
        ),
        (
            "ipv6",
            json!({"ipFamilies": ["IPv6"], "ports": ports}),
            "spec.ipFamilies[0]",
            "not configured on this cluster",
        ),
        (
            "prefer-ipv6-second",
            json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"], "ports": ports}),
            "spec.ipFamilies[1]",
            "not configured on this cluster",
        ),
        (
            "single-two",
            json!({"ipFamilies": ["IPv4", "IPv6"], "ports": ports}),
            "spec.ipFamilyPolicy",
            "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
        ),
    ] {
        let error = services
            .create(&PostParams::default(), &service(name, spec))
            .await
            .unwrap_err();
        let kube::Error::Api(status) = error else {
            panic!("{name}: expected an API error, got {error}");
        };
        assert_eq!(status.code, 422, "{name}: {status:?}");
        assert!(
            status.message.contains(message),
            "{name}: {}",
            status.message
        );
        let body = serde_json::to_string(&status).unwrap();
        assert!(body.contains(field), "{name}: {body}");
        assert!(
            services.get_opt(name).await.unwrap().is_none(),
            "{name}: a refused Service was stored"
        );
    }

    let prefer = services
        .create(
            &PostParams::default(),
            &service(
                "prefer",
                json!({"ipFamilyPolicy": "PreferDualStack", "ports": ports}),
            ),
        )
        .await
        .unwrap();
    let spec = prefer.spec.unwrap();
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_string()]));
    assert_eq!(spec.cluster_ips.map(|ips| ips.len()), Some(1));

    let headless = services
        .create(
            &PostParams::default(),
            &service("headless", json!({"clusterIP": "None", "ports": ports})),
        )
        .await
        .unwrap();
    let spec = headless.spec.unwrap();
    assert_eq!(spec.ip_family_policy.as_deref(), Some("RequireDualStack"));
    assert_eq!(
        spec.ip_families,
        Some(vec!["IPv4".to_string(), "IPv6".to_string()])
    );
}
