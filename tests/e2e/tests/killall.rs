//! `krust killall` on a node in its own network namespace: it stops the node's agent
//! and leaves nothing of the node behind (containers, pod network namespaces,
//! mounts, cgroups, the bridge, krust's routes, nftables tables and iptables chains),
//! and a second run finds nothing to do. Needs root.

use std::path::Path;
use std::process::Command;

use krust_e2e::cluster::{CLUSTER_READY_TIMEOUT, TestCluster};
use serde_json::json;

/// The pids whose cgroup paths name pod `uid` (its containers and sandbox).
fn pod_pids(uid: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|cgroups| cgroups.contains(uid))
        })
        .collect()
}

/// The cgroup directories of pod `uid` that `pid` is in, one per v1 hierarchy
/// (`/sys/fs/cgroup/<controller>/.../pod<uid>`).
fn pod_cgroup_dirs(pid: u32, uid: &str) -> Vec<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    cgroups
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            if controllers.is_empty() || controllers.contains(',') || controllers.contains('=') {
                return None;
            }
            let end = path.find(uid)? + uid.len();
            Some(format!("/sys/fs/cgroup/{controllers}{}", &path[..end]))
        })
        .collect()
}

/// The mount points under `dir` in this mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&dir))
        .map(String::from)
        .collect()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn killall_stops_the_node_and_leaves_nothing_of_it() {
    let mut cluster = TestCluster::start(1);
    let agent_dir = cluster.nodes[0].data_dir();
    let netns = cluster.nodes[0].netns.clone();
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "nodeName": cluster.nodes[0].name,
            "containers": [{"name": "c", "image": cluster.image("krust/httpd:1"),
                            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
            "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
        },
    }));
    krust_e2e::wait_until("the pod runs", CLUSTER_READY_TIMEOUT, || {
        cluster.pod_field("default", "web", ".status.phase") == "Running"
    });
    let uid = cluster.pod_field("default", "web", ".metadata.uid");
    let pids = pod_pids(&uid);
    assert!(!pids.is_empty(), "no process of pod {uid} found");
    let cgroup_dirs = pod_cgroup_dirs(pids[0], &uid);
    assert!(!cgroup_dirs.is_empty(), "no cgroup of pod {uid} found");
    let identify = Command::new("ip")
        .args(["netns", "identify", &pids[0].to_string()])
        .output()
        .unwrap();
    let pod_netns = String::from_utf8_lossy(&identify.stdout).trim().to_string();
    assert!(
        !pod_netns.is_empty(),
        "the pod's network namespace has no name"
    );
    assert!(
        !mounts_under(&agent_dir).is_empty(),
        "the pod's volumes and rootfs are mounted"
    );
    let tables = text(&cluster.exec_on_node(0, &["nft", "list", "tables"]));
    for table in ["krust-proxy", "krust-net-krust0", "krust-netpol-krust0"] {
        assert!(tables.contains(table), "{table} missing before: {tables}");
    }
    assert!(agent_dir.join("krust.pid").exists());

    let killall = |agent_dir: &Path| {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg(krust_e2e::krust_bin())
            .args(["killall", "--agent-data-dir"])
            .arg(agent_dir)
            .output()
            .expect("cannot run krust killall")
    };
    let out = killall(&agent_dir);
    assert!(out.status.success(), "krust killall: {}", text(&out));
    assert!(text(&out).contains("stopped krust (pid"), "{}", text(&out));

    // The agent is gone (a zombie until reaped: no executable), and so is its record.
    cluster.stop_agent(0);
    assert!(!agent_dir.join("krust.pid").exists());
    assert_eq!(
        pod_pids(&uid),
        Vec::<u32>::new(),
        "the pod's processes remain"
    );
    for dir in &cgroup_dirs {
        assert!(!Path::new(dir).exists(), "cgroup {dir} remains");
    }
    assert!(
        !Path::new("/run/netns").join(&pod_netns).exists(),
        "the pod's network namespace {pod_netns} remains"
    );
    assert_eq!(mounts_under(&agent_dir), Vec::<String>::new());
    let tables = text(&cluster.exec_on_node(0, &["nft", "list", "tables"]));
    assert!(!tables.contains("krust"), "tables remain: {tables}");
    let routes = text(&cluster.exec_on_node(0, &["ip", "route", "show", "proto", "75"]));
    assert!(routes.trim().is_empty(), "routes remain: {routes}");
    let bridge = cluster.exec_on_node(0, &["ip", "link", "show", "krust0"]);
    assert!(!bridge.status.success(), "the bridge remains");
    for table in ["nat", "filter"] {
        let rules = text(&cluster.exec_on_node(0, &["iptables-save", "-t", table]));
        assert!(
            !rules.contains("KUBE-") && !rules.contains("KRUST-"),
            "iptables {table} keeps krust's chains: {rules}"
        );
    }

    // Nothing left to do: a second run succeeds, and so does one for a dir that does
    // not exist (it says so).
    let again = killall(&agent_dir);
    assert!(again.status.success(), "{}", text(&again));
    assert!(!text(&again).contains("stopped krust"), "{}", text(&again));
    let missing = killall(&agent_dir.join("no-such-node"));
    assert!(missing.status.success(), "{}", text(&missing));
    assert!(
        text(&missing).contains("does not exist"),
        "{}",
        text(&missing)
    );
}
