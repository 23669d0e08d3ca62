//! krust's node agent (the kubelet): runs the pods bound to its node.
//!
//! The agent does not run containers itself: it drives a CRI v1 runtime over gRPC
//! ([`cri`]). By default it starts and supervises its own containerd ([`containerd`])
//! with a generated config and a pause image it builds locally ([`oci`]); with
//! `--container-runtime-endpoint` it uses a runtime that already runs.
//!
//! A newcomer starts at [`run`]: it prepares the host (CNI config, containerd),
//! registers the Node and renews its Lease ([`node`]), and runs one worker per pod
//! ([`pods`]) that moves the runtime's state towards the pod's spec and reports back
//! through `pods/status`. Everything goes through the API with a kube-rs client.

pub mod containerd;
pub mod cri;
pub mod csi;
pub mod dns;
pub mod eviction;
pub mod image_gc;
pub mod local_path;
pub mod node;
pub mod object_watches;
pub mod oci;
pub mod pods;
pub mod probes;
pub mod server;
pub mod service_env;
pub mod static_pods;
pub mod stats;
pub mod volume_stats;
mod volumes;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Flags of the node agent, shared by `krust agent` and the agent embedded in
/// `krust server`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentOptions {
    /// Name of this node (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// Directory for the agent's containerd, pod volumes and logs
    /// (default: `agent/` under the server's data dir, or /var/lib/krust/agent).
    #[arg(long, value_name = "DIR")]
    pub agent_data_dir: Option<PathBuf>,

    /// CRI socket of a runtime that already runs (containerd or CRI-O), e.g.
    /// unix:///run/containerd/containerd.sock. Default: start our own containerd.
    #[arg(long, value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,

    /// Registry hosts configuration for the agent's containerd: a directory in
    /// containerd's certs.d layout (`<host:port>/hosts.toml`), e.g. to pull from a
    /// plain-HTTP local registry.
    #[arg(long, value_name = "DIR")]
    pub registry_config: Option<PathBuf>,

    /// The pod network of this node (default: the podCIDR the server's node IPAM
    /// gives the Node).
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Option<String>,

    /// Name of the Linux bridge pods attach to (at most 15 characters).
    #[arg(long, default_value = "krust0", value_name = "NAME")]
    pub cni_bridge: String,

    /// Directory with the CNI plugin binaries.
    #[arg(long, default_value = "/usr/lib/cni", value_name = "DIR")]
    pub cni_bin_dir: PathBuf,

    /// Directory of static pod manifests (YAML or JSON), run as mirror pods.
    #[arg(long, value_name = "DIR")]
    pub pod_manifest_path: Option<PathBuf>,

    /// Port of the kubelet API (HTTPS: logs for `kubectl logs`).
    #[arg(long, default_value_t = 10250, value_name = "PORT")]
    pub kubelet_port: u16,

    /// The node's address: its InternalIP, and where the kubelet API listens
    /// (default: the address of the default route).
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<std::net::IpAddr>,

    /// Nameservers (comma-separated) written into pods' resolv.conf with dnsPolicy
    /// ClusterFirst; empty: the node has no cluster DNS and such pods get the host's.
    #[arg(long, default_value = "10.43.0.10", value_name = "IP[,IP]")]
    pub cluster_dns: String,

    /// The host resolver configuration pods with dnsPolicy Default start from (and
    /// whose search list ClusterFirst pods inherit). When it names only loopback
    /// nameservers (a local stub such as systemd-resolved), which pods cannot reach,
    /// /run/systemd/resolve/resolv.conf is used where it exists.
    #[arg(long, default_value = "/etc/resolv.conf", value_name = "FILE")]
    pub resolv_conf: PathBuf,

    /// The cluster's DNS domain: pods' search list, and the zone the server's cluster
    /// DNS serves.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,

    /// Hard eviction thresholds: comma-separated `signal<quantity` or `signal<N%`
    /// (signals memory.available, nodefs.available, nodefs.inodesFree,
    /// imagefs.available, imagefs.inodesFree, pid.available); crossing one raises the
    /// Node's pressure condition and evicts pods. Empty: no eviction.
    #[arg(long, default_value = eviction::DEFAULT_EVICTION_HARD, value_name = "THRESHOLDS")]
    pub eviction_hard: String,

    /// Soft eviction thresholds, written as --eviction-hard's: crossing one raises the
    /// pressure condition at once, but pods are evicted (gracefully) only once it
    /// stays crossed for its --eviction-soft-grace-period. Empty: none.
    #[arg(long, default_value = "", value_name = "THRESHOLDS")]
    pub eviction_soft: String,

    /// Grace periods of the soft thresholds: comma-separated `signal=duration`, e.g.
    /// memory.available=1m30s.
    #[arg(long, default_value = "", value_name = "PERIODS")]
    pub eviction_soft_grace_period: String,

    /// Longest termination grace period (seconds) a pod evicted for a soft threshold
    /// gets; 0 or less: the pod's own.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "SECONDS",
        allow_hyphen_values = true
    )]
    pub eviction_max_pod_grace_period: i64,

    /// How long a pressure condition stays True after its signal recovered.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub eviction_pressure_transition_period: std::time::Duration,

    /// Image filesystem usage (percent) above which unused images are removed.
    #[arg(long, default_value_t = 85, value_name = "PERCENT")]
    pub image_gc_high_threshold: u8,

    /// Image filesystem usage (percent) image garbage collection frees down to.
    #[arg(long, default_value_t = 80, value_name = "PERCENT")]
    pub image_gc_low_threshold: u8,

    /// How long an image must be unused before it may be collected.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = parse_duration)]
    pub image_minimum_gc_age: std::time::Duration,
}

/// The resolved settings the agent runs with.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    pub data_dir: PathBuf,
    pub runtime_endpoint: Option<PathBuf>,
    pub registry_config: Option<PathBuf>,
    /// The node's pod CIDR from `--pod-cidr`; None: wait for the Node's spec.podCIDR.
    pub pod_cidr: Option<String>,
    /// The MTU of pod interfaces (None: the CNI default), lower under an overlay.
    pub pod_mtu: Option<u32>,
    pub cni_bridge: String,
    pub cni_bin_dir: PathBuf,
    /// The cluster DNS servers (empty: none).
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The host resolv.conf pods' DNS settings start from.
    pub resolv_conf: PathBuf,
    pub kubelet_port: u16,
    pub node_ip: std::net::IpAddr,
    pub pod_manifest_path: Option<PathBuf>,
    /// The cluster CA (PEM) that signs the API server's client certificate; without
    /// it the kubelet API is not served.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Hard eviction thresholds (`--eviction-hard`).
    pub eviction_hard: Vec<eviction::Threshold>,
    pub eviction_soft: Vec<eviction::Threshold>,
    pub eviction_max_pod_grace_period: i64,
    pub eviction_pressure_transition_period: std::time::Duration,
    /// Image garbage collection (`--image-gc-*`).
    pub image_gc: image_gc::Policy,
}

/// Parses a duration as Go writes them for the flags upstream has: `40s`, `500ms`,
/// `2m`, `1h` (a plain number is seconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 40s, 500ms or 2m"))?;
    let millis = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    Ok(std::time::Duration::from_millis(number * millis))
}

impl AgentOptions {
    /// Resolves defaults; `default_data_dir` is where the agent keeps its state when
    /// `--agent-data-dir` is not given.
    pub fn resolve(&self, default_data_dir: &Path) -> Result<AgentConfig> {
        let node_name = match &self.node_name {
            Some(name) => name.clone(),
            None => hostname()?,
        };
        if self.cni_bridge.is_empty() || self.cni_bridge.len() > 15 {
            anyhow::bail!(
                "--cni-bridge {:?}: a Linux interface name has 1 to 15 characters",
                self.cni_bridge
            );
        }
        if let Some(cidr) = &self.pod_cidr {
            validate_cidr(cidr)?;
        }
        Ok(AgentConfig {
            node_name: node_name.to_lowercase(),
            data_dir: self
                .agent_data_dir
                .clone()
                .unwrap_or_else(|| default_data_dir.to_path_buf()),
            runtime_endpoint: self
                .container_runtime_endpoint
                .as_deref()
                .map(|e| PathBuf::from(e.strip_prefix("unix://").unwrap_or(e))),
            registry_config: self.registry_config.clone(),
            pod_cidr: self.pod_cidr.clone(),
            pod_mtu: None,
            cni_bridge: self.cni_bridge.clone(),
            cni_bin_dir: self.cni_bin_dir.clone(),
            cluster_dns: cluster_dns_servers(&self.cluster_dns)?,
            cluster_domain: self.cluster_domain.trim_end_matches('.').to_string(),
            resolv_conf: pod_resolv_conf(&self.resolv_conf),
            kubelet_port: self.kubelet_port,
            pod_manifest_path: self.pod_manifest_path.clone(),
            eviction_hard: eviction::parse_thresholds(&self.eviction_hard)
                .context("--eviction-hard")?,
            eviction_soft: eviction::parse_soft_thresholds(
                &self.eviction_soft,
                &self.eviction_soft_grace_period,
            )
            .context("--eviction-soft")?,
            eviction_max_pod_grace_period: self.eviction_max_pod_grace_period,
            eviction_pressure_transition_period: self.eviction_pressure_transition_period,
            image_gc: image_gc::Policy::new(
                self.image_gc_high_threshold,
                self.image_gc_low_threshold,
                self.image_minimum_gc_age,
            )?,
            node_ip: self
                .node_ip
                .or_else(node::node_ip)
                .unwrap_or([127, 0, 0, 1].into()),
            client_ca_pem: None,
        })
    }
}

/// The `--cluster-dns` list: comma-separated IP addresses, or empty for none.
fn cluster_dns_servers(list: &str) -> Result<Vec<String>> {
    let servers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = servers
        .iter()
        .find(|s| s.parse::<std::net::IpAddr>().is_err())
    {
        anyhow::bail!("--cluster-dns {list:?}: {bad:?} is not an IP address");
    }
    Ok(servers)
}

/// Where pods' host DNS settings come from: `configured`, unless it names only
/// loopback nameservers and systemd-resolved's upstream list exists.
fn pod_resolv_conf(configured: &Path) -> PathBuf {
    const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";
    let read =
        |path: &Path| dns::parse_resolv_conf(&std::fs::read_to_string(path).unwrap_or_default());
    if dns::only_loopback_servers(&read(configured))
        && !dns::only_loopback_servers(&read(Path::new(RESOLVED_UPSTREAMS)))
        && Path::new(RESOLVED_UPSTREAMS).exists()
    {
        tracing::info!(
            configured = %configured.display(),
            "the host resolver is a loopback stub pods cannot reach; pods get {RESOLVED_UPSTREAMS}"
        );
        return PathBuf::from(RESOLVED_UPSTREAMS);
    }
    configured.to_path_buf()
}

fn validate_cidr(cidr: &str) -> Result<()> {
    let ok = cidr
        .split_once('/')
        .map(|(ip, len)| {
            ip.parse::<std::net::Ipv4Addr>().is_ok()
                && len.parse::<u8>().map(|l| l <= 30).unwrap_or(false)
        })
        .unwrap_or(false);
    if !ok {
        anyhow::bail!("--pod-cidr {cidr:?}: expected an IPv4 network like 10.42.0.0/24");
    }
    Ok(())
}

fn hostname() -> Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name; pass --node-name")?;
    Ok(name.trim().to_string())
}

/// The CNI network config: a bridge with host-local addresses from the pod CIDR,
/// and portmap for hostPort.
pub fn render_cni_config(config: &AgentConfig, pod_cidr: &str) -> String {
    let mut bridge = serde_json::json!({
        "type": "bridge",
        "bridge": config.cni_bridge,
        "isGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": pod_cidr }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": config.data_dir.join("cni/ipam"),
        },
    });
    if let Some(mtu) = config.pod_mtu {
        bridge["mtu"] = mtu.into();
    }
    serde_json::to_string_pretty(&serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "krust",
        "plugins": [bridge, { "type": "portmap", "capabilities": { "portMappings": true } }],
    }))
    .expect("a JSON value always serializes")
}

/// Runs the agent until the task is dropped or an unrecoverable error happens.
pub async fn run(config: AgentConfig, client: kube::Client) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    // Pods reach each other and the outside only with forwarding on (off on a new host).
    if let Err(error) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
        tracing::warn!(%error, "cannot enable net.ipv4.ip_forward; pod traffic may not be routed");
    }
    let cni_conf_dir = config.data_dir.join("cni/net.d");
    std::fs::create_dir_all(&cni_conf_dir)?;
    // Written once the pod CIDR is known (containerd loads it when it appears).
    let cni_conf_file = cni_conf_dir.join("10-krust.conflist");
    if let Some(cidr) = &config.pod_cidr {
        std::fs::write(&cni_conf_file, render_cni_config(&config, cidr))?;
    }

    let mut supervisor = None;
    let socket = match &config.runtime_endpoint {
        Some(socket) => socket.clone(),
        None => {
            let layout = containerd::Layout::new(&config.data_dir);
            let settings = containerd::Settings {
                cni_conf_dir,
                cni_bin_dir: config.cni_bin_dir.clone(),
                registry_config: config.registry_config.clone(),
            };
            let started = containerd::Containerd::start(layout.clone(), &settings).await?;
            let socket = started.socket();
            supervisor = Some(started.supervise(settings));
            let import = layout.clone();
            tokio::task::spawn_blocking(move || containerd::import_pause_image(&import)).await??;
            socket
        }
    };
    let mut cri = cri::Cri::connect(&socket).await?;
    let version = cri.version().await?;
    tracing::info!(
        runtime = %version.runtime_name,
        version = %version.runtime_version,
        node = %config.node_name,
        "the node agent is connected to its container runtime"
    );

    let sampler = stats::Sampler::default();
    let sampling = tokio::spawn(stats::run(sampler.clone(), cri.clone()));
    let _kubelet_api = match &config.client_ca_pem {
        Some(ca) => Some(
            server::serve(
                std::net::SocketAddr::new(config.node_ip, config.kubelet_port),
                &config.node_name,
                ca,
                config.data_dir.join("logs"),
                cri.clone(),
                sampler.clone(),
            )
            .await?,
        ),
        None => {
            tracing::warn!("no cluster CA given: the kubelet API (logs) is not served");
            None
        }
    };
    node::register(&client, &config, &version).await?;
    let (pressure, pressure_seen) = tokio::sync::watch::channel(eviction::Pressure::default());
    let heartbeat = tokio::spawn(node::heartbeat(
        client.clone(),
        config.clone(),
        version,
        pressure_seen,
    ));
    let pod_cidr = match &config.pod_cidr {
        Some(cidr) => cidr.clone(),
        None => node::wait_for_pod_cidr(&client, &config.node_name).await?,
    };
    let conflist = render_cni_config(&config, &pod_cidr);
    if std::fs::read_to_string(&cni_conf_file).ok().as_deref() != Some(conflist.as_str()) {
        std::fs::write(&cni_conf_file, conflist)?;
    }
    let static_pods = config.pod_manifest_path.clone().map(|dir| {
        tokio::spawn(static_pods::run(
            client.clone(),
            dir,
            config.node_name.clone(),
        ))
    });
    let local_path = tokio::spawn(local_path::run(
        client.clone(),
        config.node_name.clone(),
        config.data_dir.clone(),
    ));
    let drivers = csi::Drivers::default();
    let volume_sampling = tokio::spawn(volume_stats::run(
        sampler.clone(),
        volume_stats::Calculator::new(config.data_dir.clone(), drivers.clone()),
    ));
    let plugin_watcher = tokio::spawn(csi::watch_registry(
        client.clone(),
        config.node_name.clone(),
        config.data_dir.clone(),
        drivers.clone(),
    ));
    let csi_controller = tokio::spawn(csi::controller::run(
        client.clone(),
        config.node_name.clone(),
        drivers.clone(),
    ));
    let result = pods::run(client, cri, config, sampler, pressure, drivers).await;
    plugin_watcher.abort();
    csi_controller.abort();
    local_path.abort();
    sampling.abort();
    volume_sampling.abort();
    heartbeat.abort();
    if let Some(static_pods) = static_pods {
        static_pods.abort();
    }
    if let Some(server) = _kubelet_api {
        server.abort();
    }
    if let Some(supervisor) = supervisor {
        supervisor.abort();
    }
    result
}

/// Removes everything an agent made under `data_dir`: every pod sandbox of its
/// containerd (containers, network namespaces, mounts), then stops that containerd
/// and deletes the CNI bridge. For tests and `krust killall`; the agent itself
/// never calls it.
pub async fn teardown(data_dir: &Path, bridge: &str) -> Result<()> {
    let layout = containerd::Layout::new(data_dir);
    if layout.config().exists() {
        // A containerd is needed to stop the sandboxes through CRI: reuse or restart one.
        let settings = containerd::Settings {
            cni_conf_dir: data_dir.join("cni/net.d"),
            cni_bin_dir: "/usr/lib/cni".into(),
            registry_config: None,
        };
        if let Ok(mut own) = containerd::Containerd::start(layout.clone(), &settings).await {
            if let Ok(mut cri) = cri::Cri::connect(&own.socket()).await {
                for sandbox in cri.list_pod_sandboxes().await.unwrap_or_default() {
                    let _ = cri.stop_pod_sandbox(&sandbox.id).await;
                    let _ = cri.remove_pod_sandbox(&sandbox.id).await;
                    if let Some(uid) = sandbox.metadata.as_ref().map(|m| &m.uid) {
                        pods::remove_pod_cgroups(uid);
                    }
                }
            }
            own.stop();
        }
        containerd::stop_pid(&layout);
    }
    volumes::unmount_all_under(data_dir);
    let _ = std::process::Command::new("ip")
        .args(["link", "delete", bridge])
        .stderr(std::process::Stdio::null())
        .status();
    Ok(())
}

/// Agent options for unit tests: the flags' defaults, with `args` given.
#[cfg(test)]
pub(crate) fn test_options(args: &[&str]) -> AgentOptions {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        agent: AgentOptions,
    }
    Flags::parse_from(std::iter::once("krust-agent").chain(args.iter().copied())).agent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_flags_are_named() {
        let options = test_options(&["--node-name=n1", "--pod-cidr=10.42.0.0"]);
        let error = options.resolve(Path::new("/tmp")).unwrap_err();
        assert!(error.to_string().contains("--pod-cidr"), "{error}");
        let long_bridge = AgentOptions {
            pod_cidr: Some("10.42.0.0/24".into()),
            cni_bridge: "a-very-long-bridge-name".into(),
            ..options
        };
        let error = long_bridge.resolve(Path::new("/tmp")).unwrap_err();
        assert!(error.to_string().contains("--cni-bridge"), "{error}");
    }

    #[test]
    fn cni_config_uses_the_pod_cidr_and_bridge() {
        let options = test_options(&[
            "--node-name=N1",
            "--agent-data-dir=/data",
            "--container-runtime-endpoint=unix:///run/x.sock",
            "--pod-cidr=10.42.7.0/24",
            "--cni-bridge=kr7",
        ]);
        let config = options.resolve(Path::new("/tmp")).unwrap();
        assert_eq!(config.node_name, "n1");
        assert_eq!(config.runtime_endpoint, Some(PathBuf::from("/run/x.sock")));
        let mut config = config;
        config.pod_mtu = Some(1450);
        let cni: serde_json::Value =
            serde_json::from_str(&render_cni_config(&config, "10.42.7.0/24")).unwrap();
        assert_eq!(cni["plugins"][0]["mtu"], 1450);
        assert_eq!(cni["plugins"][1]["type"], "portmap");
        assert_eq!(cni["plugins"][0]["bridge"], "kr7");
        assert_eq!(
            cni["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.7.0/24"
        );
        assert_eq!(cni["plugins"][0]["ipam"]["dataDir"], "/data/cni/ipam");
    }
}
