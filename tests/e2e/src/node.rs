//! A one-node cluster that runs real containers: `krust server` with its embedded
//! agent (its own containerd, a CNI bridge and pod network of its own) and a local
//! registry holding the test images.
//!
//! Each [`TestNode`] has a unique node name, bridge and pod CIDR, so several can run
//! at once. On drop (also when the test panics) it stops the server, removes every
//! pod sandbox through CRI (containers, network namespaces, mounts), stops the
//! agent's containerd and deletes the bridge.

use std::path::PathBuf;
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
    _registry_hosts: tempfile::TempDir,
}

impl TestNode {
    /// Starts the registry (with the test images), the server with its agent, and
    /// waits until the Node is Ready.
    pub fn start() -> TestNode {
        let registry = TestRegistry::start_with_test_images();
        let tag: u32 = rand_u32();
        let node_name = format!("node-{:06x}", tag & 0xff_ffff);
        let bridge = format!("kt{:06x}", tag & 0xff_ffff);
        let pod_cidr = format!("10.42.{}.0/24", 1 + (tag >> 24) % 250);
        let hosts = tempfile::Builder::new()
            .prefix("krust-registry-hosts-")
            .tempdir()
            .expect("temp dir");
        let registry_config = registry
            .write_hosts_config(hosts.path())
            .expect("cannot write the registry hosts config");
        let server = TestServer::start_with(ServerOptions {
            agent: true,
            extra_args: vec![
                format!("--node-name={node_name}"),
                format!("--cni-bridge={bridge}"),
                format!("--pod-cidr={pod_cidr}"),
                format!("--registry-config={}", registry_config.display()),
                format!("--kubelet-port={}", crate::free_port()),
                "--node-ip=127.0.0.1".to_string(),
            ],
            ..Default::default()
        });
        let agent_dir = server.data_dir().join("agent");
        let node = TestNode {
            server,
            registry,
            node_name,
            bridge,
            agent_dir,
            _registry_hosts: hosts,
        };
        let name = node.node_name.clone();
        crate::wait_until(&format!("node {name} is Ready"), NODE_READY_TIMEOUT, || {
            let out = node.server.kubectl([
                "get",
                "node",
                &name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            String::from_utf8_lossy(&out.stdout).trim() == "True"
        });
        node
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
        self.server.kill9();
        let agent_dir = self.agent_dir.clone();
        let bridge = self.bridge.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        if let Err(error) = runtime.block_on(krust_kubelet::teardown(&agent_dir, &bridge)) {
            eprintln!(
                "krust-e2e: teardown of {} failed: {error:#}",
                agent_dir.display()
            );
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
