//! The `krust` binary: Kubernetes in one process.
//!
//! This file holds the command line (clap) and the error reporting; each subcommand
//! lives in its own module. A newcomer starts at [`server::run`], which wires the
//! PKI ([`pki`]), the kubeconfig ([`kubeconfig`]), the store and the API server.
//!
//! Errors end the process with exit status 1 and a single line on stderr
//! (`error: ...`); command line mistakes exit with status 2.

mod hostaddrs;
mod kubeconfig;
mod pki;
mod scheduler;
mod server;
mod tokens;

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
    Server(ServerArgs),
    /// Run the scheduler against a cluster (leader-elected on the kube-system/kube-scheduler Lease).
    Scheduler(SchedulerArgs),
}

/// Flags of `krust scheduler`.
#[derive(Clone, Debug, clap::Args)]
pub struct SchedulerArgs {
    /// The kubeconfig to reach the API server with.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,
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

    /// Most read requests served at once (watches excepted); more get 429.
    #[arg(long, default_value_t = 400, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_inflight: u32,

    /// Most writes served at once; more get 429.
    #[arg(long, default_value_t = 200, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_mutating_requests_inflight: u32,

    /// Do not run the scheduler in this process (run `krust scheduler` elsewhere).
    #[arg(long)]
    pub disable_scheduler: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return report_usage_error(err),
    };
    init_logging();
    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::Scheduler(args) => scheduler::run(args),
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
            panic!("not the server command")
        };
        assert_eq!(args.bind_address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(args.port, 6443);
        assert_eq!(args.data_dir, PathBuf::from("/var/lib/krust"));
        assert!(args.datastore.is_none());
        assert!(args.token_auth_file.is_none());
    }

    #[test]
    fn https_listen_port_is_an_alias_of_port() {
        let cli = Cli::try_parse_from(["krust", "server", "--https-listen-port", "7443"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not the server command")
        };
        assert_eq!(args.port, 7443);
    }
}
