//! The `krust` binary: Kubernetes in one process.
//!
//! This file holds the command line (clap) and the error reporting; each subcommand
//! lives in its own module. A newcomer starts at [`server::run`], which wires the
//! PKI ([`pki`]), the kubeconfig ([`kubeconfig`]), the store and the API server.
//!
//! Errors end the process with exit status 1 and a single line on stderr
//! (`error: ...`); command line mistakes exit with status 2.

mod agent;
mod apiserver_endpoints;
mod cluster_secrets;
mod components;
mod hostaddrs;
mod killall;
mod kubeconfig;
mod node_join;
mod pki;
mod server;
mod token;
mod tokens;

use krust_kubelet::parse_duration;

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kubernetes (v1.33 API) in one binary.
#[derive(Debug, Parser)]
#[command(name = "krust", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: the API server on an embedded SQLite store or on etcd.
    Server(Box<ServerArgs>),
    /// Run the node agent: join a cluster and run the pods bound to this node.
    Agent(Box<AgentArgs>),
    /// Run the scheduler against a cluster (leader-elected on the kube-system/kube-scheduler Lease).
    Scheduler(SchedulerArgs),
    /// Run the controllers against a cluster (leader-elected on the
    /// kube-system/kube-controller-manager Lease).
    ControllerManager(ControllerManagerArgs),
    /// Manage bootstrap tokens, with which new nodes join (`krust agent --token`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Stop this host's node and remove its pods, containerd, bridge, routes and
    /// firewall rules (the data dirs stay).
    Killall(KillallArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct KillallArgs {
    /// The server's data dir; its node's agent data dir is `agent/` in it.
    #[arg(long, default_value = "/var/lib/krust", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// The node's agent data dir, when not `agent/` under --data-dir (as given to
    /// `krust agent --agent-data-dir`).
    #[arg(long, value_name = "DIR")]
    pub agent_data_dir: Option<PathBuf>,

    /// The node's pod bridge (as given to --cni-bridge).
    #[arg(long, default_value = "krust0", value_name = "NAME")]
    pub cni_bridge: String,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a bootstrap token (a kube-system/bootstrap-token-<id> Secret) and print
    /// it as <id>.<secret>.
    Create(TokenCreateArgs),
}

/// Flags of `krust token create`.
#[derive(Clone, Debug, clap::Args)]
pub struct TokenCreateArgs {
    /// An admin kubeconfig of the cluster.
    #[arg(
        long,
        default_value = "/var/lib/krust/admin.kubeconfig",
        value_name = "FILE"
    )]
    pub kubeconfig: PathBuf,

    /// How long the token may be used, e.g. 24h, 30m; 0 for no expiry.
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: std::time::Duration,

    /// A description kept in the Secret.
    #[arg(
        long,
        default_value = "created by krust token create",
        value_name = "TEXT"
    )]
    pub description: String,
}

/// Flags of `krust agent`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// The API server, e.g. https://10.0.0.1:6443.
    #[arg(long, value_name = "URL")]
    pub server: String,

    /// Bearer token the agent authenticates with. A bootstrap token (`<id>.<secret>`,
    /// 6 and 16 characters of [a-z0-9]) is used only to get the node's client
    /// certificate through a CertificateSigningRequest (kept under
    /// <agent-data-dir>/pki/ and reused while valid).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "KRUST_TOKEN",
        hide_env_values = true
    )]
    pub token: String,

    /// CA certificate to verify the API server with (the server's tls/ca.crt).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    #[command(flatten)]
    pub agent: krust_kubelet::AgentOptions,

    #[command(flatten)]
    pub net: krust_net::NetOptions,

    #[command(flatten)]
    pub proxy: krust_proxy::ProxyOptions,

    /// The cluster's pod network (as the server's --cluster-cidr): traffic leaving it
    /// is masqueraded.
    #[arg(long, default_value = "10.42.0.0/16", value_name = "CIDR")]
    pub cluster_cidr: krust_api::cidr::Ipv4Cidr,

    /// The cluster's Service range (as the server's --service-cluster-ip-range).
    #[arg(long, default_value = "10.43.0.0/16", value_name = "CIDR")]
    pub service_cidr: krust_api::cidr::Ipv4Cidr,
}

/// Flags of `krust scheduler`.
#[derive(Clone, Debug, clap::Args)]
pub struct SchedulerArgs {
    /// The kubeconfig to reach the API server with.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,
}

/// Flags of `krust controller-manager`.
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerManagerArgs {
    /// The kubeconfig to reach the API server with.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,

    /// The cluster CA (PEM) to publish in every namespace as the kube-root-ca.crt
    /// ConfigMap (the server's tls/ca.crt); not published without it.
    #[arg(long, value_name = "FILE")]
    pub root_ca_file: Option<PathBuf>,

    /// The CA certificate and key (PEM) that sign approved kubelet and client
    /// CertificateSigningRequests (the server's tls/ca.crt and tls/ca.key); without
    /// them approved requests stay unsigned.
    #[arg(long, value_name = "FILE", requires = "cluster_signing_key_file")]
    pub cluster_signing_cert_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "cluster_signing_cert_file")]
    pub cluster_signing_key_file: Option<PathBuf>,

    #[command(flatten)]
    pub controllers: ControllerFlags,
}

/// Flags of the controllers, in `krust server` and `krust controller-manager`.
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerFlags {
    /// IPv4 range the nodes' pod CIDRs (a /24 each) are taken from.
    #[arg(long, default_value = "10.42.0.0/16", value_name = "CIDR")]
    pub cluster_cidr: krust_api::cidr::Ipv4Cidr,

    /// How long a node may go without renewing its Lease before it is marked
    /// NotReady (Unknown) and its pods start being evicted, e.g. 40s, 500ms, 2m.
    #[arg(long, default_value = "40s", value_name = "DURATION", value_parser = parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,

    /// The longest a certificate signed for a CertificateSigningRequest is valid
    /// (nodes renew theirs at 70-90% of it), e.g. 8760h.
    #[arg(long, default_value = "8760h", value_name = "DURATION", value_parser = parse_duration)]
    pub cluster_signing_duration: std::time::Duration,

    /// How often the horizontal pod autoscaler looks at every HPA.
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = positive_duration)]
    pub horizontal_pod_autoscaler_sync_period: std::time::Duration,

    /// How long an HPA without a `behavior` waits before scaling down: it scales to
    /// the highest size recommended within this window.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,

    /// How far (as a fraction) the usage may be from the target before an HPA scales.
    #[arg(long, default_value_t = 0.1, value_name = "RATIO", value_parser = tolerance)]
    pub horizontal_pod_autoscaler_tolerance: f64,

    /// How long after a pod starts its CPU sample is used only when the pod is Ready
    /// and the sample was taken after it became Ready.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_cpu_initialization_period: std::time::Duration,

    /// How long after a pod starts a change of its readiness is taken as its first
    /// readiness (its CPU then is not counted).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_initial_readiness_delay: std::time::Duration,
}

/// A duration flag that must be more than zero.
fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match parse_duration(text)? {
        std::time::Duration::ZERO => Err(format!("{text:?}: must be more than 0")),
        duration => Ok(duration),
    }
}

/// The HPA tolerance: a fraction, 0 or more.
fn tolerance(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if ratio.is_finite() && ratio >= 0.0 => Ok(ratio),
        _ => Err(format!("{text:?}: write a fraction of 0 or more, e.g. 0.1")),
    }
}

impl ControllerFlags {
    /// The controllers' options from these flags and the cluster CA.
    pub fn options(&self, root_ca_pem: Option<String>) -> krust_controllers::Options {
        krust_controllers::Options {
            root_ca_pem,
            cluster_cidr: self.cluster_cidr,
            node_monitor_grace_period: self.node_monitor_grace_period,
            autoscaler: krust_controllers::podautoscaler::Settings {
                sync_period: self.horizontal_pod_autoscaler_sync_period,
                downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
                calculator: krust_controllers::podautoscaler::replicas::Calculator {
                    tolerance: self.horizontal_pod_autoscaler_tolerance,
                    cpu_initialization_period: self
                        .horizontal_pod_autoscaler_cpu_initialization_period,
                    initial_readiness_delay: self.horizontal_pod_autoscaler_initial_readiness_delay,
                },
            },
            ..Default::default()
        }
    }
}

/// Flags of `krust server`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to serve HTTPS on (0.0.0.0 or :: for every interface).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub bind_address: IpAddr,

    /// Port to serve HTTPS on.
    #[arg(
        long = "port",
        visible_alias = "https-listen-port",
        default_value_t = 6443,
        value_name = "PORT"
    )]
    pub port: u16,

    /// Directory for the embedded datastore, certificates and the admin kubeconfig.
    #[arg(long, default_value = "/var/lib/krust", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// External datastore, e.g. etcd://127.0.0.1:2379 (default: SQLite in the data dir).
    #[arg(long, value_name = "URL")]
    pub datastore: Option<String>,

    /// Static bearer tokens: CSV lines `token,user,uid,"group1,group2"`, as kube-apiserver's
    /// --token-auth-file.
    #[arg(long, value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,

    /// Private key (PEM, PKCS#8 ECDSA P-256) that signs service account tokens
    /// (default: tls/service-account.key in the data dir, created when missing).
    /// Every server of one cluster needs the same key.
    #[arg(long, value_name = "FILE")]
    pub service_account_key_file: Option<PathBuf>,

    /// The issuer (`iss`) of service account tokens, also the audience the API accepts.
    #[arg(long, value_name = "URL", default_value = krust_apiserver::service_account::DEFAULT_ISSUER)]
    pub service_account_issuer: String,

    /// Most read requests served at once (watches excepted); more get 429.
    #[arg(long, default_value_t = 400, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_inflight: u32,

    /// Most writes served at once; more get 429.
    #[arg(long, default_value_t = 200, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_mutating_requests_inflight: u32,

    /// Do not run the scheduler in this process (run `krust scheduler` elsewhere).
    #[arg(long)]
    pub disable_scheduler: bool,

    /// Do not run the controllers in this process (run `krust controller-manager`
    /// elsewhere).
    #[arg(long)]
    pub disable_controllers: bool,

    /// Do not run the node agent inside the server (no pods run on this machine).
    #[arg(long)]
    pub disable_agent: bool,

    #[command(flatten)]
    pub agent: krust_kubelet::AgentOptions,

    #[command(flatten)]
    pub net: krust_net::NetOptions,

    #[command(flatten)]
    pub proxy: krust_proxy::ProxyOptions,

    /// IPv4 range Services get their ClusterIPs from; its first address is the
    /// `kubernetes` Service's.
    #[arg(long, default_value = "10.43.0.0/16", value_name = "CIDR")]
    pub service_cluster_ip_range: krust_api::cidr::Ipv4Cidr,

    /// Ports NodePort Services get their node ports from.
    #[arg(long, default_value = "30000-32767", value_name = "FIRST-LAST")]
    pub service_node_port_range: krust_api::cidr::PortRange,

    #[command(flatten)]
    pub controllers: ControllerFlags,

    #[command(flatten)]
    pub dns: krust_dns::DnsOptions,
}

/// `krust controller-manager`: the controllers on their own, leader-elected.
fn controller_manager(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let root_ca_pem = match &args.root_ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the root CA {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut options = args.controllers.options(root_ca_pem);
    if let (Some(cert), Some(key)) = (
        &args.cluster_signing_cert_file,
        &args.cluster_signing_key_file,
    ) {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the signing CA {}: {e}", path.display()))
        };
        options.signing_ca = Some(krust_controllers::certificates::SigningCa {
            max_validity: args.controllers.cluster_signing_duration,
            ..krust_controllers::certificates::SigningCa::new(read(cert)?, read(key)?)
        });
    }
    components::run_standalone("krust-controllers", &args.kubeconfig, |client| {
        components::controller_manager(client, krust_leader::default_identity(), options)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return report_usage_error(err),
    };
    init_logging();
    let result = match cli.command {
        Command::Server(args) => server::run(*args),
        Command::Agent(args) => agent::run(*args),
        Command::Scheduler(args) => {
            components::run_standalone("krust-scheduler", &args.kubeconfig, |client| {
                components::scheduler(client, krust_leader::default_identity())
            })
        }
        Command::ControllerManager(args) => controller_manager(args),
        Command::Token(TokenCommand::Create(args)) => token::create(args),
        Command::Killall(args) => killall::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: "a: b: c".
            let line = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command line error as one line (help and version go out as clap prints them).
fn report_usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid command line");
    let first = first.trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let _ = writeln!(
        std::io::stderr(),
        "error: {first} (see 'krust --help' or 'krust server --help')"
    );
    ExitCode::from(2)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: logs redirected to a file stay plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_defaults() {
        let cli = Cli::try_parse_from(["krust", "server"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert!(!args.disable_agent);
        assert_eq!(args.bind_address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(args.port, 6443);
        assert_eq!(
            args.controllers.node_monitor_grace_period,
            std::time::Duration::from_secs(40)
        );
        assert_eq!(args.service_cluster_ip_range.to_string(), "10.43.0.0/16");
        assert_eq!(args.data_dir, PathBuf::from("/var/lib/krust"));
        assert!(args.datastore.is_none());
        assert!(args.token_auth_file.is_none());
    }

    #[test]
    fn agent_needs_server_and_token() {
        assert!(
            Cli::try_parse_from(["krust", "agent", "--server", "https://127.0.0.1:6443"]).is_err()
        );
        let cli = Cli::try_parse_from([
            "krust",
            "agent",
            "--server",
            "https://127.0.0.1:6443",
            "--token",
            "t",
            "--node-name",
            "n1",
        ])
        .unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.token, "t");
        assert_eq!(args.agent.node_name.as_deref(), Some("n1"));
        assert_eq!(args.agent.pod_cidr, None);
    }

    #[test]
    fn https_listen_port_is_an_alias_of_port() {
        let cli = Cli::try_parse_from(["krust", "server", "--https-listen-port", "7443"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.port, 7443);
    }

    #[test]
    fn durations_and_ranges_parse_as_upstream_writes_them() {
        assert_eq!(
            parse_duration("40s"),
            Ok(std::time::Duration::from_secs(40))
        );
        assert_eq!(
            parse_duration("500ms"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("2m"),
            Ok(std::time::Duration::from_secs(120))
        );
        assert!(parse_duration("forty").unwrap_err().contains("40s"));
        assert!(parse_duration("4d").unwrap_err().contains("unit"));
        let error = Cli::try_parse_from([
            "krust",
            "server",
            "--service-cluster-ip-range",
            "fd00::/108",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("IPv4"), "{error}");
    }
}
