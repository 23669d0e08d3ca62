//! A multi-node cluster on one machine: `krust server` (no embedded agent) in the host
//! network namespace, listening on a test bridge of its own, and N `krust agent`
//! processes, each in its own network namespace joined to that bridge by a veth pair,
//! each with its own containerd, data dir and pod CIDR. A local registry with the test
//! images listens on the bridge address so that every node can pull.
//!
//! Addresses come from 198.18.0.0/15 (reserved for such tests): each cluster claims
//! one /24 (`198.18.0.0/24` .. `198.19.255.0/24`) with an exclusive `flock` on a lock
//! file, so parallel test processes never collide. The bridge has `.1`, node `i` has
//! `.(10 + i)`. Node namespaces have no default route: nothing leaves them.
//!
//! Fault tools: stop / kill -9 / start a node's agent, restart or kill the server, cut
//! a node off (its link down) and heal it.
//!
//! On drop (also when the test panics, then with every component's log first) it
//! stops the agents and the server, removes every pod sandbox through CRI inside the
//! node's namespace (containers, pod network namespaces, cgroups, mounts), stops each
//! containerd, and deletes the namespaces (and with them the veths) and the bridge.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::registry::TestRegistry;
use crate::{ServerOptions, TestServer};

/// How long all nodes may take to register and become Ready (containerd starts).
pub const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the per-subnet lock files live.
const LOCK_DIR: &str = "/run/krust-e2e-net";
/// The bearer token the agents join with.
const AGENT_TOKEN: &str = "krust-e2e-cluster-agent-token";
/// How many /24 subnets 198.18.0.0/15 holds.
const SUBNETS: u32 = 512;

/// Options of [`TestCluster::start_with`].
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// More flags for `krust server` (e.g. `--node-monitor-grace-period=10s`).
    pub server_args: Vec<String>,
    /// More flags for every `krust agent`.
    pub agent_args: Vec<String>,
    /// Agents join with a bootstrap token (a `kube-system/bootstrap-token-<id>`
    /// Secret written as the admin) instead of the static admin token, and so run as
    /// `system:node:<name>` with the certificate they get through a CSR.
    pub bootstrap_token: bool,
}

/// The bootstrap token agents join with under [`ClusterOptions::bootstrap_token`].
pub const BOOTSTRAP_TOKEN: &str = "e2ejoi.n0de0b00tstrap00";

/// One node: a network namespace with a `krust agent` in it.
pub struct ClusterNode {
    /// The Node's name.
    pub name: String,
    /// The network namespace (`ip netns` name).
    pub netns: String,
    /// The node's address on the test bridge (its InternalIP).
    pub ip: Ipv4Addr,
    /// The node's pod CIDR (given by the server's node IPAM; known once Ready).
    pub pod_cidr: String,
    /// The host end of the node's veth pair.
    host_veth: String,
    dir: PathBuf,
    args: Vec<String>,
    agent: Option<Child>,
}

impl ClusterNode {
    /// The agent's data dir (containerd, pod volumes, logs).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    /// Everything the agent logged (all starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

/// A server and N agent nodes, each in its own network namespace.
pub struct TestCluster {
    pub server: TestServer,
    pub registry: TestRegistry,
    pub nodes: Vec<ClusterNode>,
    /// The test bridge in the host namespace.
    pub bridge: String,
    /// The bridge's address (the server's and the registry's).
    pub bridge_ip: Ipv4Addr,
    work: tempfile::TempDir,
    /// Holds the subnet claim until drop (the lock file itself stays).
    _lock: File,
}

impl TestCluster {
    /// Starts a cluster of `nodes` agent nodes and waits until every Node is Ready.
    pub fn start(nodes: usize) -> TestCluster {
        Self::start_with(nodes, ClusterOptions::default())
    }

    /// Like [`TestCluster::start`], with more server and agent flags.
    pub fn start_with(node_count: usize, options: ClusterOptions) -> TestCluster {
        assert!(
            (1..=200).contains(&node_count),
            "a test cluster has 1 to 200 nodes"
        );
        let (subnet, lock) = claim_subnet();
        let base = subnet_base(subnet);
        let bridge_ip = with_last_octet(base, 1);
        let bridge = format!("kc{subnet:03x}");
        let work = tempfile::Builder::new()
            .prefix("krust-e2e-cluster-")
            .tempdir()
            .expect("temp dir");
        // Leftovers of a test process that died holding this subnet.
        remove_cluster_network(&bridge, subnet, 200);
        sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{bridge_ip}/24"),
            "dev",
            &bridge,
        ]);
        sh(&["ip", "link", "set", &bridge, "up"]);

        let registry = TestRegistry::start_with_test_images_on(bridge_ip);
        let registry_config = registry
            .write_hosts_config(&work.path().join("registries"))
            .expect("cannot write the registry hosts config");
        let token_file = work.path().join("tokens.csv");
        std::fs::write(
            &token_file,
            format!("{AGENT_TOKEN},krust-e2e-agent,agent-uid,\"system:masters\"\n"),
        )
        .expect("cannot write the token file");
        let mut server_args = vec![format!("--token-auth-file={}", token_file.display())];
        server_args.extend(options.server_args.iter().cloned());
        let mut cluster = TestCluster {
            server: TestServer::start_with(ServerOptions {
                bind_address: Some(bridge_ip),
                extra_args: server_args,
                ..Default::default()
            }),
            registry,
            nodes: Vec::new(),
            bridge,
            bridge_ip,
            work,
            _lock: lock,
        };
        let agent_token = match options.bootstrap_token {
            true => {
                let (id, secret) = BOOTSTRAP_TOKEN.split_once('.').expect("id.secret");
                let manifest = serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
                    "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
                    "stringData": {
                        "token-id": id, "token-secret": secret,
                        "usage-bootstrap-authentication": "true",
                    },
                });
                let out = cluster
                    .server
                    .kubectl_stdin(["apply", "-f", "-"], &manifest.to_string());
                assert!(
                    out.status.success(),
                    "cannot write the bootstrap token: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                BOOTSTRAP_TOKEN
            }
            false => AGENT_TOKEN,
        };
        for index in 0..node_count {
            let name = format!("node-{subnet:03x}-{index}");
            let netns = netns_name(subnet, index);
            let host_veth = veth_name(subnet, index);
            let ip = with_last_octet(base, 10 + index as u8);
            let dir = cluster.work.path().join(&name);
            std::fs::create_dir_all(&dir).expect("node dir");
            sh(&["ip", "netns", "add", &netns]);
            sh(&[
                "ip", "link", "add", &host_veth, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ]);
            sh(&["ip", "link", "set", &host_veth, "master", &cluster.bridge]);
            sh(&["ip", "link", "set", &host_veth, "up"]);
            in_netns(&netns, &["ip", "link", "set", "lo", "up"]);
            in_netns(
                &netns,
                &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            );
            in_netns(&netns, &["ip", "link", "set", "eth0", "up"]);
            let mut args = vec![
                format!("--server={}", cluster.server.url()),
                format!("--token={agent_token}"),
                format!(
                    "--ca-file={}",
                    cluster.server.data_dir().join("tls/ca.crt").display()
                ),
                format!("--agent-data-dir={}", dir.join("agent").display()),
                format!("--node-name={name}"),
                format!("--node-ip={ip}"),
                format!("--registry-config={}", registry_config.display()),
            ];
            args.extend(options.agent_args.iter().cloned());
            let args = crate::with_test_eviction(args);
            cluster.nodes.push(ClusterNode {
                name,
                netns,
                ip,
                pod_cidr: String::new(),
                host_veth,
                dir,
                args,
                agent: None,
            });
            cluster.start_agent(index);
        }
        cluster.wait_all_ready();
        for index in 0..cluster.nodes.len() {
            let name = cluster.nodes[index].name.clone();
            let mut cidr = String::new();
            crate::wait_until(
                &format!("node {name} has a pod CIDR"),
                CLUSTER_READY_TIMEOUT,
                || {
                    let out = cluster.server.kubectl([
                        "get",
                        "node",
                        &name,
                        "-o",
                        "jsonpath={.spec.podCIDR}",
                    ]);
                    cidr = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    !cidr.is_empty()
                },
            );
            cluster.nodes[index].pod_cidr = cidr;
        }
        cluster
    }

    /// Waits until every node is Ready.
    pub fn wait_all_ready(&self) {
        for index in 0..self.nodes.len() {
            self.wait_node_ready(index, true);
        }
    }

    /// Waits until node `index`'s Ready condition is `True` (`ready`) or not.
    pub fn wait_node_ready(&self, index: usize, ready: bool) {
        let name = &self.nodes[index].name;
        let what = if ready { "Ready" } else { "NotReady" };
        crate::wait_until(
            &format!("node {name} is {what}"),
            CLUSTER_READY_TIMEOUT,
            || (self.node_ready_status(index) == "True") == ready,
        );
    }

    /// The status of node `index`'s Ready condition (`True`, `False`, `Unknown`, or
    /// empty when the Node is not there).
    pub fn node_ready_status(&self, index: usize) -> String {
        let out = self.server.kubectl([
            "get",
            "node",
            &self.nodes[index].name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts node `index`'s agent (again) inside its namespace.
    pub fn start_agent(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        assert!(node.agent.is_none(), "the agent of {} runs", node.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("agent.log"))
            .expect("cannot open the agent log");
        // nsenter enters only the network namespace; `ip netns exec` would also
        // remount /sys and with it hide the cgroup hierarchies containers need.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.netns))
            .arg(crate::krust_bin())
            .arg("agent")
            .args(&node.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot start krust agent under nsenter");
        node.agent = Some(child);
    }

    /// Stops node `index`'s agent gracefully (SIGTERM, SIGKILL after the harness's
    /// stop timeout); its containerd and containers stay.
    pub fn stop_agent(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].agent.take() {
            // nsenter execs the agent: the pid is the agent's.
            crate::signal(&child, libc::SIGTERM);
            if crate::wait_timeout(&mut child, crate::STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Kills node `index`'s agent (SIGKILL); its containerd and containers stay.
    pub fn kill_agent(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Cuts node `index` off the cluster network (its link down).
    pub fn cut_off(&self, index: usize) {
        sh(&["ip", "link", "set", &self.nodes[index].host_veth, "down"]);
    }

    /// Reconnects a node cut off with [`TestCluster::cut_off`].
    pub fn heal(&self, index: usize) {
        sh(&["ip", "link", "set", &self.nodes[index].host_veth, "up"]);
    }

    /// Runs a command inside node `index`'s network namespace and returns its output.
    pub fn exec_on_node(&self, index: usize, command: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.nodes[index].netns])
            .args(command)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run ip netns exec")
    }

    /// Creates or updates an object with `kubectl apply`; panics if refused.
    pub fn apply(&self, object: &serde_json::Value) {
        let out = self
            .server
            .kubectl_stdin(["apply", "-f", "-"], &object.to_string());
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A field of pod `name` in `namespace` (a kubectl jsonpath like `.status.podIP`).
    pub fn pod_field(&self, namespace: &str, name: &str, path: &str) -> String {
        let out = self.server.kubectl([
            "get",
            "pod",
            "-n",
            namespace,
            name,
            "-o",
            &format!("jsonpath={{{path}}}"),
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A pod of one container bound to node `node` (no scheduling involved).
    fn pinned_pod(
        &self,
        namespace: &str,
        name: &str,
        node: usize,
        labels: serde_json::Value,
        restart_policy: &str,
        container: serde_json::Value,
    ) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "nodeName": self.nodes[node].name,
                "restartPolicy": restart_policy,
                "containers": [container],
            },
        })
    }

    /// Starts pod `name` in `namespace` on node `node` with `image` (running the
    /// image's own command) and `labels`, and waits until it runs; returns its IP.
    pub fn run_pod(
        &self,
        namespace: &str,
        name: &str,
        node: usize,
        image: &str,
        labels: serde_json::Value,
    ) -> String {
        let container = serde_json::json!({"name": "c", "image": self.image(image)});
        self.apply(&self.pinned_pod(namespace, name, node, labels, "Always", container));
        let mut ip = String::new();
        crate::wait_until(&format!("pod {name} runs"), CLUSTER_READY_TIMEOUT, || {
            ip = self.pod_field(namespace, name, ".status.podIP");
            !ip.is_empty() && self.pod_field(namespace, name, ".status.phase") == "Running"
        });
        ip
    }

    /// Runs `script` (busybox sh) in pod `name` in `namespace` on node `node` with
    /// `labels`, waits for it to succeed and returns its log; panics with the log when
    /// it fails.
    pub fn run_script(
        &self,
        namespace: &str,
        name: &str,
        node: usize,
        labels: serde_json::Value,
        script: &str,
    ) -> String {
        let container = serde_json::json!({"name": "c", "image": self.image("krust/busybox:1"),
                                           "command": ["sh", "-c", script]});
        self.apply(&self.pinned_pod(namespace, name, node, labels, "Never", container));
        let mut phase = String::new();
        crate::wait_until(
            &format!("pod {name} finishes"),
            CLUSTER_READY_TIMEOUT,
            || {
                phase = self.pod_field(namespace, name, ".status.phase");
                phase == "Succeeded" || phase == "Failed"
            },
        );
        let log = self.server.kubectl(["logs", "-n", namespace, name]);
        let log = String::from_utf8_lossy(&log.stdout).to_string();
        assert_eq!(
            phase,
            "Succeeded",
            "pod {name} failed; its log:\n{log}\n{}",
            self.agent_logs()
        );
        log
    }

    /// A test image's full reference in the cluster's registry.
    pub fn image(&self, name: &str) -> String {
        self.registry.image(name)
    }

    /// Every agent's log, for failure messages.
    pub fn agent_logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "--- krust agent {} log (last 80 lines) ---\n{}\n",
                    node.name,
                    crate::tail(&node.log(), 80)
                )
            })
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.agent_logs());
        }
        for index in 0..self.nodes.len() {
            self.kill_agent(index);
        }
        self.server.kill9();
        for node in &self.nodes {
            teardown_node(node);
        }
        let subnet = subnet_of(&self.bridge);
        remove_cluster_network(&self.bridge, subnet, self.nodes.len());
        if std::thread::panicking() && std::env::var_os("KRUST_E2E_KEEP").is_some() {
            let work = std::mem::replace(&mut self.work, tempfile::tempdir().expect("temp dir"));
            eprintln!("krust-e2e: kept {}", work.keep().display());
        }
    }
}

/// Removes a node's pod sandboxes, containerd, cgroups and mounts, from inside its
/// network namespace (the CNI plugins that release pod addresses run there).
fn teardown_node(node: &ClusterNode) {
    let netns = node.netns.clone();
    let data_dir = node.data_dir();
    let result = std::thread::spawn(move || -> anyhow::Result<()> {
        // setns(2) moves only this thread (and what it starts) into the namespace.
        let file = File::open(format!("/run/netns/{netns}"))?;
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            anyhow::bail!("setns {netns}: {}", std::io::Error::last_os_error());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(krust_kubelet::teardown(&data_dir, "krust0"))
    })
    .join();
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("krust-e2e: teardown of {} failed: {error:#}", node.name),
        Err(_) => eprintln!("krust-e2e: teardown of {} panicked", node.name),
    }
}

/// Deletes the bridge and the namespaces `0..nodes` of `subnet` (missing ones are fine).
fn remove_cluster_network(bridge: &str, subnet: u32, nodes: usize) {
    for index in 0..nodes {
        quiet(&["ip", "netns", "delete", &netns_name(subnet, index)]);
        quiet(&["ip", "link", "delete", &veth_name(subnet, index)]);
    }
    quiet(&["ip", "link", "delete", bridge]);
}

/// Claims a free /24 of 198.18.0.0/15: the first whose lock file this process can
/// lock exclusively (the lock goes with the process, also when it dies).
fn claim_subnet() -> (u32, File) {
    std::fs::create_dir_all(LOCK_DIR).expect("cannot create the lock dir");
    let start = std::process::id() % SUBNETS;
    for offset in 0..SUBNETS {
        let subnet = (start + offset) % SUBNETS;
        let path = PathBuf::from(format!("{LOCK_DIR}/subnet-{subnet}.lock"));
        let file = File::create(&path).expect("cannot create a lock file");
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return (subnet, file);
        }
    }
    panic!("every /24 of 198.18.0.0/15 is claimed by another test process")
}

fn subnet_base(subnet: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (subnet << 8))
}

fn subnet_of(bridge: &str) -> u32 {
    u32::from_str_radix(&bridge[2..], 16).expect("bridge names are kc<hex>")
}

fn with_last_octet(base: Ipv4Addr, last: u8) -> Ipv4Addr {
    let [a, b, c, _] = base.octets();
    Ipv4Addr::new(a, b, c, last)
}

fn netns_name(subnet: u32, index: usize) -> String {
    format!("krust-e2e-{subnet:03x}-{index}")
}

fn veth_name(subnet: u32, index: usize) -> String {
    format!("kc{subnet:03x}n{index}")
}

/// Runs `ip netns exec <netns> command...`; panics if it fails.
fn in_netns(netns: &str, command: &[&str]) {
    let mut full = vec!["ip", "netns", "exec", netns];
    full.extend_from_slice(command);
    sh(&full);
}

/// Runs a command; panics with its stderr if it fails.
fn sh(command: &[&str]) {
    let output = Command::new(command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Runs a command and ignores how it ends (cleanup of what may not exist).
fn quiet(command: &[&str]) {
    let _ = Command::new(command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_cover_198_18_0_0_slash_15() {
        assert_eq!(subnet_base(0), Ipv4Addr::new(198, 18, 0, 0));
        assert_eq!(subnet_base(255), Ipv4Addr::new(198, 18, 255, 0));
        assert_eq!(subnet_base(256), Ipv4Addr::new(198, 19, 0, 0));
        assert_eq!(subnet_base(SUBNETS - 1), Ipv4Addr::new(198, 19, 255, 0));
        assert_eq!(subnet_of(&format!("kc{:03x}", 300)), 300);
        // Interface names fit IFNAMSIZ (15 bytes).
        assert!(veth_name(SUBNETS - 1, 199).len() <= 15);
    }
}
