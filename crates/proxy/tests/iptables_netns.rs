//! The iptables mode against the real kernel: the rules of a few Services are applied
//! with the real `iptables-restore` inside a network namespace this test creates,
//! where two backends listen, and a client in the same namespace proves that a
//! ClusterIP reaches the backends (both of them), that a Service without endpoints
//! refuses at once, that a NodePort answers on the node's address and on 127.0.0.1,
//! that an endpoint change moves the traffic, and that removing the chains leaves
//! none behind; also, in both modes, that `--nodeport-addresses` limits the
//! addresses node ports answer on. Needs root; everything lives in the namespace,
//! deleted on the way out.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use krust_proxy::ProxyMode;
use krust_proxy::apply::Commands;
use krust_proxy::compute::{NodeContext, service_ports};
use krust_proxy::iptables::{self, Applier};
use serde_json::json;

/// A network namespace of this test, deleted (with every rule in it) on drop, panic
/// included; backends serving in it stop then too.
struct Netns {
    name: String,
    stop: Arc<AtomicBool>,
}

impl Netns {
    fn create(tag: &str) -> Netns {
        let name = format!("krust-ipt-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "delete", &name])
            .stderr(std::process::Stdio::null())
            .status();
        sh(&["ip", "netns", "add", &name]);
        let netns = Netns {
            name,
            stop: Arc::new(AtomicBool::new(false)),
        };
        // The "node": loopback, a node address, two pod addresses (on one end of a veth
        // pair), the service range routed onto that end (so that a connect has a route
        // before the DNAT).
        for command in [
            "ip link set lo up",
            "ip link add node0 type veth peer name node1",
            "ip link set node0 up",
            "ip link set node1 up",
            "ip addr add 198.18.5.1/24 dev node0",
            "ip addr add 10.42.0.5/32 dev node0",
            "ip addr add 10.42.0.6/32 dev node0",
            "ip route add 10.43.0.0/16 dev node0",
            "sysctl -q -w net.ipv4.conf.all.route_localnet=1",
        ] {
            let mut argv = vec!["ip", "netns", "exec", &netns.name];
            argv.extend(command.split(' '));
            sh(&argv);
        }
        netns
    }

    fn prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .map(String::from)
            .to_vec()
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }

    /// A TCP server in the namespace on `address` answering every connection with
    /// `answer`; listening when this returns.
    fn serve(&self, address: &str, answer: &'static str) {
        let address: SocketAddr = address.parse().unwrap();
        let stop = self.stop.clone();
        let listener = self.run(move || TcpListener::bind(address).unwrap());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(answer.as_bytes());
                    }
                    // Polled so that the server ends with the test.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }

    /// Connects from inside the namespace to `address`: what the server said, or
    /// the error of the connect.
    fn connect(&self, address: &str) -> std::io::Result<String> {
        let address: SocketAddr = address.parse().unwrap();
        self.run(move || {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })
    }

    /// `iptables-save` of the namespace.
    fn save(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "iptables-save"])
            .output()
            .unwrap();
        assert!(out.status.success(), "iptables-save failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn sh(argv: &[&str]) {
    let status = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
    assert!(status.success(), "{} failed", argv.join(" "));
}

fn service(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
    )
    .unwrap()
}

/// The EndpointSlice of Service `name` with ready endpoints `ips` on port 8080 of
/// this node.
fn slice(name: &str, ips: &[&str]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-x"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|ip| json!({
            "addresses": [ip], "nodeName": "node-a", "conditions": {"ready": true},
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn services() -> Vec<Service> {
    let port = json!([{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]);
    vec![
        service("web", json!({"clusterIP": "10.43.0.5", "ports": port})),
        service(
            "node",
            json!({"type": "NodePort", "clusterIP": "10.43.0.7", "ports": port}),
        ),
        service("empty", json!({"clusterIP": "10.43.0.9", "ports": port})),
    ]
}

/// Waits (up to 10 s) until `check` holds; panics with `what` and the last value.
fn wait_until<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    check: impl Fn(&T) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = probe();
        if check(&value) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last {value:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn cluster_ip_node_port_and_reject_through_real_iptables_restore() {
    let netns = Netns::create("svc");
    netns.serve("10.42.0.5:8080", "backend-5");
    netns.serve("10.42.0.6:8080", "backend-6");
    let node = NodeContext {
        node_name: "node-a".into(),
        cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
        node_ip: Some("198.18.5.1".parse().unwrap()),
        node_port_cidrs: Vec::new(),
    };
    let mut applier = Applier::new(Commands::new(netns.prefix()));
    let slices = vec![
        slice("web", &["10.42.0.5", "10.42.0.6"]),
        slice("node", &["10.42.0.6"]),
    ];
    let desired = iptables::tables(&service_ports(&services(), &slices, &node), &node);
    assert!(applier.apply(desired.clone()).await.unwrap(), "first sync");
    assert!(
        !applier.apply(desired).await.unwrap(),
        "an unchanged model changes nothing"
    );
    let save = netns.save();
    assert!(
        save.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ),
        "{save}"
    );
    assert!(save.contains("--probability 0.5"), "{save}");

    // The ClusterIP reaches both backends.
    let mut seen = std::collections::BTreeSet::new();
    wait_until(
        "the ClusterIP reaches both backends",
        || {
            if let Ok(answer) = netns.connect("10.43.0.5:80") {
                seen.insert(answer);
            }
            seen.clone()
        },
        |seen| seen.len() == 2,
    );

    // No endpoints: refused at once (a reset), not a timeout.
    let started = Instant::now();
    let error = netns.connect("10.43.0.9:80").unwrap_err();
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // The NodePort answers on the node's address and on 127.0.0.1.
    assert_eq!(netns.connect("198.18.5.1:30080").unwrap(), "backend-6");
    assert_eq!(netns.connect("127.0.0.1:30080").unwrap(), "backend-6");

    // An endpoint change moves the traffic; the gone endpoint's chain goes.
    let before: Vec<String> = netns
        .save()
        .lines()
        .filter(|l| l.starts_with(":KUBE-SEP-"))
        .map(String::from)
        .collect();
    let slices = vec![slice("web", &["10.42.0.5"]), slice("node", &["10.42.0.5"])];
    let desired = iptables::tables(&service_ports(&services(), &slices, &node), &node);
    assert!(applier.apply(desired).await.unwrap());
    assert_eq!(netns.connect("198.18.5.1:30080").unwrap(), "backend-5");
    for _ in 0..10 {
        assert_eq!(netns.connect("10.43.0.5:80").unwrap(), "backend-5");
    }
    let after = netns.save();
    let seps = after
        .lines()
        .filter(|l| l.starts_with(":KUBE-SEP-"))
        .count();
    assert_eq!(
        seps, 2,
        "one endpoint chain per Service port and endpoint:\n{after}"
    );
    assert!(before.len() == 3, "{before:?}");

    // A Service deleted: its ClusterIP no longer answers through the proxy.
    let desired = iptables::tables(&service_ports(&services()[1..], &slices, &node), &node);
    assert!(applier.apply(desired).await.unwrap());
    assert!(netns.connect("10.43.0.5:80").is_err());

    // A fresh applier (an agent restart) reads what exists and rewrites it all.
    let mut restarted = Applier::new(Commands::new(netns.prefix()));
    let desired = iptables::tables(&service_ports(&services(), &slices, &node), &node);
    assert!(restarted.apply(desired).await.unwrap());
    assert_eq!(netns.connect("10.43.0.5:80").unwrap(), "backend-5");
    let save = netns.save();
    assert_eq!(
        save.matches("-A PREROUTING -m comment --comment \"kubernetes service portals\"")
            .count(),
        1,
        "the jumps are inserted once:\n{save}"
    );

    // Cleanup: no chain and no jump of the proxy is left.
    restarted.remove_all().await.unwrap();
    let save = netns.save();
    assert!(!save.contains("KUBE-"), "{save}");
    let error = netns.connect("10.43.0.9:80").unwrap_err();
    assert_ne!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the reject rule is gone: {error}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn switching_modes_removes_the_other_modes_rules_and_nftables_falls_back() {
    let netns = Netns::create("mode");
    let node = NodeContext {
        node_name: "node-a".into(),
        cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
        node_ip: Some("198.18.5.1".parse().unwrap()),
        node_port_cidrs: Vec::new(),
    };
    let slices = vec![slice("web", &["10.42.0.5"])];
    let ports = service_ports(&services(), &slices, &node);
    let nft_table = || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.name,
                "nft",
                "list",
                "table",
                "ip",
                "krust-proxy",
            ])
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };

    // iptables rules, then a start in nftables mode: the chains and jumps go.
    let mut applier = Applier::new(Commands::new(netns.prefix()));
    applier
        .apply(iptables::tables(&ports, &node))
        .await
        .unwrap();
    assert!(netns.save().contains(":KUBE-SERVICES"));
    let mode = krust_proxy::select_mode(ProxyMode::Nftables, &netns.prefix()).await;
    assert_eq!(mode, ProxyMode::Nftables);
    let save = netns.save();
    assert!(!save.contains("KUBE-"), "{save}");

    // The nftables table, then a start in iptables mode: the table goes.
    let mut nft = krust_proxy::apply::Applier::new(netns.prefix());
    nft.apply(krust_proxy::compute::ruleset(&ports, &node))
        .await
        .unwrap();
    assert!(nft_table());
    let mode = krust_proxy::select_mode(ProxyMode::Iptables, &netns.prefix()).await;
    assert_eq!(mode, ProxyMode::Iptables);
    assert!(!nft_table(), "the nftables mode's table is left");

    // An `nft` the kernel refuses (a stand-in on the PATH that fails as nft does
    // without nf_tables): nftables mode falls back to iptables.
    let dir = std::env::temp_dir().join(format!("krust-ipt-nft-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("nft");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Error: Could not process rule: Operation not supported' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut prefix = netns.prefix();
    prefix.extend([
        "env".to_string(),
        format!("PATH={}:/usr/sbin:/usr/bin:/sbin:/bin", dir.display()),
    ]);
    let mode = krust_proxy::select_mode(ProxyMode::Nftables, &prefix).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(mode, ProxyMode::Iptables);
}

/// `--nodeport-addresses`: with a range, a node port answers on the local addresses
/// in it and not on 127.0.0.1; without one, on both. In each mode.
#[tokio::test(flavor = "current_thread")]
async fn node_ports_answer_only_on_the_addresses_in_nodeport_addresses() {
    for mode in [ProxyMode::Nftables, ProxyMode::Iptables] {
        let netns = Netns::create(if mode == ProxyMode::Nftables {
            "npn"
        } else {
            "npi"
        });
        netns.serve("10.42.0.6:8080", "backend-6");
        let mut node = NodeContext {
            node_name: "node-a".into(),
            cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
            node_ip: Some("198.18.5.1".parse().unwrap()),
            node_port_cidrs: vec!["198.18.5.0/24".parse().unwrap()],
        };
        let slices = vec![slice("node", &["10.42.0.6"])];
        let mut nft = krust_proxy::apply::Applier::new(netns.prefix());
        let mut ipt = Applier::new(Commands::new(netns.prefix()));
        let mut apply = async |node: &NodeContext| {
            let ports = service_ports(&services(), &slices, node);
            match mode {
                ProxyMode::Nftables => nft.apply(krust_proxy::compute::ruleset(&ports, node)).await,
                ProxyMode::Iptables => ipt.apply(iptables::tables(&ports, node)).await,
            }
            .unwrap()
        };
        assert!(apply(&node).await);
        assert_eq!(
            netns.connect("198.18.5.1:30080").unwrap(),
            "backend-6",
            "{mode:?}: the node address in the range"
        );
        let error = netns.connect("127.0.0.1:30080").unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{mode:?}: 127.0.0.1 is outside the range, nothing listens there: {error}"
        );
        // The ClusterIP is not subject to the ranges.
        assert_eq!(netns.connect("10.43.0.7:80").unwrap(), "backend-6");

        node.node_port_cidrs.clear();
        assert!(apply(&node).await);
        assert_eq!(netns.connect("127.0.0.1:30080").unwrap(), "backend-6");
        assert_eq!(netns.connect("198.18.5.1:30080").unwrap(), "backend-6");
    }
}
