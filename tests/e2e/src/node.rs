//! A one-node cluster that runs real containers: `krust server` with its embedded
//! agent (its own containerd, a CNI bridge and pod network of its own) and a local
//! registry holding the test images.
//!
//! Each [`TestNode`] has a unique node name, bridge and pod CIDR, so several can run
//! at once. On drop (also when the test panics) it stops the server, removes every
//! pod sandbox through CRI (containers, network namespaces, mounts), stops the
//! agent's containerd and deletes the bridge.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::registry::TestRegistry;
use crate::{ServerOptions, TestServer};

/// How long the node may take to register and become Ready (containerd start).
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A cluster of one real node.
pub struct TestNode {
    pub server: TestServer,
    pub registry: TestRegistry,
    pub node_name: String,
    bridge: String,
    agent_dir: PathBuf,
    /// The agent flags both kinds of node pass.
    agent_args: Vec<String>,
    /// A `krust agent` process of its own (see [`TestNode::start_separate_agent`]).
    agent: Option<Child>,
    /// Registry hosts config, token file, separate agent's data dir and log.
    work: tempfile::TempDir,
}

/// The bearer token the separate agent joins with.
const AGENT_TOKEN: &str = "krust-e2e-agent-token";

impl TestNode {
    /// Starts the registry (with the test images), the server with its embedded
    /// agent, and waits until the Node is Ready.
    pub fn start() -> TestNode {
        Self::start_with(false, &[])
    }

    /// Like [`TestNode::start`], with more flags for the embedded agent.
    pub fn start_with_agent_args(extra_agent_args: &[&str]) -> TestNode {
        Self::start_with(false, extra_agent_args)
    }

    /// Like [`TestNode::start`], but the agent is a `krust agent` process of its own
    /// that joins with a bearer token (`--server`, `--token`, `--ca-file`).
    pub fn start_separate_agent() -> TestNode {
        Self::start_with(true, &[])
    }

    fn start_with(separate: bool, extra_agent_args: &[&str]) -> TestNode {
        let registry = TestRegistry::start_with_test_images();
        let tag: u32 = rand_u32();
        let node_name = format!("node-{:06x}", tag & 0xff_ffff);
        let bridge = format!("kt{:06x}", tag & 0xff_ffff);
        let pod_cidr = format!("10.42.{}.0/24", 1 + (tag >> 24) % 250);
        let work = tempfile::Builder::new()
            .prefix("krust-e2e-node-")
            .tempdir()
            .expect("temp dir");
        let registry_config = registry
            .write_hosts_config(&work.path().join("registries"))
            .expect("cannot write the registry hosts config");
        let mut agent_args = vec![
            format!("--node-name={node_name}"),
            format!("--cni-bridge={bridge}"),
            format!("--pod-cidr={pod_cidr}"),
            // Many test nodes share the host's namespace: no routes, and no
            // service proxy (one table per namespace) there.
            "--flannel-backend=none".to_string(),
            "--disable-proxy".to_string(),
            format!("--registry-config={}", registry_config.display()),
            format!("--kubelet-port={}", crate::free_port()),
            "--node-ip=127.0.0.1".to_string(),
            format!(
                "--pod-manifest-path={}",
                work.path().join("manifests").display()
            ),
        ];
        agent_args.extend(extra_agent_args.iter().map(|a| a.to_string()));
        let agent_args = crate::with_test_eviction(agent_args);
        let token_file = work.path().join("tokens.csv");
        std::fs::write(
            &token_file,
            format!("{AGENT_TOKEN},krust-e2e-agent,agent-uid,\"system:masters\"\n"),
        )
        .expect("cannot write the token file");
        let mut extra_args = vec![format!("--token-auth-file={}", token_file.display())];
        if !separate {
            extra_args.extend(agent_args.iter().cloned());
        }
        let server = TestServer::start_with(ServerOptions {
            agent: !separate,
            extra_args,
            ..Default::default()
        });
        let agent_dir = if separate {
            work.path().join("agent")
        } else {
            server.data_dir().join("agent")
        };
        let mut node = TestNode {
            server,
            registry,
            node_name,
            bridge,
            agent_dir,
            agent_args,
            agent: None,
            work,
        };
        if separate {
            node.start_agent();
        }
        node.wait_ready();
        node
    }

    /// Waits until the Node is Ready.
    pub fn wait_ready(&self) {
        let name = self.node_name.clone();
        crate::wait_until(&format!("node {name} is Ready"), NODE_READY_TIMEOUT, || {
            let out = self.server.kubectl([
                "get",
                "node",
                &name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            String::from_utf8_lossy(&out.stdout).trim() == "True"
        });
    }

    /// Starts the separate `krust agent` process (again).
    pub fn start_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.path().join("agent.log"))
            .expect("cannot open the agent log");
        let child = Command::new(crate::krust_bin())
            .arg("agent")
            .arg(format!("--server={}", self.server.url()))
            .arg(format!("--token={AGENT_TOKEN}"))
            .arg(format!(
                "--ca-file={}",
                self.server.data_dir().join("tls/ca.crt").display()
            ))
            .arg(format!("--agent-data-dir={}", self.agent_dir.display()))
            .args(&self.agent_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot start krust agent");
        self.agent = Some(child);
    }

    /// The process id of the separate agent, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Kills the separate agent process (SIGKILL); its containerd and containers stay.
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The agent's static pod manifest directory (created on first use).
    pub fn manifest_dir(&self) -> PathBuf {
        let dir = self.work.path().join("manifests");
        std::fs::create_dir_all(&dir).expect("cannot create the manifest dir");
        dir
    }

    /// The separate agent's log.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.work.path().join("agent.log")).unwrap_or_default()
    }

    /// A test image's full reference in the node's registry (e.g. `krust/busybox:1`).
    pub fn image(&self, name: &str) -> String {
        self.registry.image(name)
    }

    /// The agent's data dir (containerd, pod volumes, logs).
    pub fn agent_dir(&self) -> &std::path::Path {
        &self.agent_dir
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() && self.agent.is_some() {
            eprintln!("--- krust agent log ---\n{}", self.agent_log());
        }
        self.kill_agent();
        self.server.kill9();
        let agent_dir = self.agent_dir.clone();
        let bridge = self.bridge.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        krust_netpol::teardown(&bridge);
        if let Err(error) = runtime.block_on(krust_kubelet::teardown(&agent_dir, &bridge)) {
            eprintln!(
                "krust-e2e: teardown of {} failed: {error:#}",
                agent_dir.display()
            );
        }
        if std::thread::panicking() && std::env::var_os("KRUST_E2E_KEEP").is_some() {
            let work = std::mem::replace(&mut self.work, tempfile::tempdir().expect("temp dir"));
            eprintln!("krust-e2e: kept {}", work.keep().display());
        }
    }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    if let Ok(mut file) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut file, &mut bytes);
    }
    u32::from_le_bytes(bytes) ^ std::process::id()
}
