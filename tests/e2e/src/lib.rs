//! Test harness for whole-cluster tests: real `krust` processes, real kubectl, real etcd.
//!
//! - [`TestServer`] runs `krust server` on a free 127.0.0.1 port with a private temp
//!   data dir, waits until `GET /readyz` answers 200, and hands out kubectl, kube-rs
//!   and raw HTTPS access. It is killed on drop; if the test is panicking, the tail of
//!   its log goes to stderr first.
//! - [`EtcdServer`] runs Debian's `/usr/bin/etcd` on free ports, for `--datastore`.
//! - [`run_krust`] runs the binary once with a deadline (CLI error tests).
//! - [`websocket`] opens WebSocket connections to a server as its admin.
//!
//! The harness builds nothing: it runs the `krust` binary next to the test executable
//! (`target/<profile>/krust`), or `$KRUST_BIN`. Build it first with
//! `cargo build -p krust` (`make test` does). kubectl is `/usr/bin/kubectl` or
//! `$KUBECTL`; etcd is `/usr/bin/etcd` or `$ETCD_BIN`.
//!
//! Every test gets its own ports and directories, so tests run in parallel and
//! twice in a row. Set `KRUST_E2E_KEEP=1` to keep the temp dirs of failed tests.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod cluster;
pub mod csi;
pub mod hollow;
pub mod images;
pub mod node;
pub mod registry;
pub mod websocket;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How long a server may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The eviction thresholds of test agents: low, because test nodes share a machine
/// whose disk or memory may be fuller than upstream's defaults allow, and a node
/// under pressure refuses pods. Only the eviction tests cross thresholds on purpose.
pub const TEST_EVICTION_HARD: &str = "--eviction-hard=memory.available<1Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%";

/// `agent_args` with the test eviction thresholds unless they set their own.
pub fn with_test_eviction(mut agent_args: Vec<String>) -> Vec<String> {
    if !agent_args.iter().any(|a| a.starts_with("--eviction-hard")) {
        agent_args.push(TEST_EVICTION_HARD.to_string());
    }
    agent_args
}

/// How long a graceful stop (SIGTERM) may take before the process is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often conditions are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How many log lines a failing test prints.
const LOG_TAIL_LINES: usize = 80;
/// Attempts to find a free port when another process takes it first.
const PORT_ATTEMPTS: usize = 3;

/// Options of [`TestServer::start_with`].
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// `--datastore` (e.g. [`EtcdServer::url`]); None uses the embedded SQLite store.
    pub datastore: Option<String>,
    /// More flags for `krust server`.
    pub extra_args: Vec<String>,
    /// Extra environment variables for the server process.
    pub env: Vec<(String, String)>,
    /// Run the embedded node agent (off by default: most tests need no containers;
    /// see [`node::TestNode`]).
    pub agent: bool,
    /// `--bind-address`; None is 127.0.0.1 (see [`cluster::TestCluster`] for another).
    pub bind_address: Option<std::net::Ipv4Addr>,
    /// `--port`; None takes a free one (another server's, for servers of one cluster
    /// on different addresses).
    pub port: Option<u16>,
}

/// A running `krust server` with its own data dir and port.
pub struct TestServer {
    /// Holds the data dir and logs; removed on drop.
    temp: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    port: u16,
    options: ServerOptions,
    child: Option<Child>,
    starts: usize,
    /// Set when a panic message already carried the log tail (Drop then skips it).
    log_reported: bool,
}

impl TestServer {
    /// Starts a server on the embedded datastore and waits until it is ready.
    /// Panics with the server's log if it does not get ready.
    pub fn start() -> TestServer {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server with `options` and waits until it is ready.
    pub fn start_with(options: ServerOptions) -> TestServer {
        let temp = tempfile::Builder::new()
            .prefix("krust-e2e-")
            .tempdir()
            .expect("cannot create a temp dir for the test server");
        let data_dir = temp.path().join("data");
        let mut server = TestServer {
            temp: Some(temp),
            data_dir,
            port: 0,
            options,
            child: None,
            starts: 0,
            log_reported: false,
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = server.options.port.unwrap_or_else(free_port);
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(err) if server.lost_port_race() => last_error = Some(err),
                Err(err) => server.fail(err),
            }
        }
        let err = last_error.expect("at least one attempt");
        server.fail(err)
    }

    /// The directory passed as `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// The HTTPS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://<bind address>:<port>` (127.0.0.1 unless [`ServerOptions::bind_address`]).
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.bind_ip(), self.port)
    }

    fn bind_ip(&self) -> std::net::Ipv4Addr {
        self.options
            .bind_address
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Everything the server printed on stdout so far (all starts).
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.log_path("stdout")).unwrap_or_default()
    }

    /// Everything the server logged on stderr so far (all starts).
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.log_path("stderr")).unwrap_or_default()
    }

    /// Runs `/usr/bin/kubectl --kubeconfig <admin.kubeconfig> ARGS` and returns its output.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.kubectl_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run kubectl")
    }

    /// Runs kubectl like [`TestServer::kubectl`] and returns its stdout; panics with
    /// its stderr when it fails.
    pub fn kubectl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
        let out = self.kubectl(&args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of a manifest (YAML or JSON); panics with kubectl's error.
    pub fn apply_yaml(&self, manifest: &str) {
        let out = self.kubectl_stdin(["apply", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kubectl's standard output, trimmed (empty when it failed).
    pub fn kubectl_text<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        String::from_utf8_lossy(&self.kubectl(args).stdout)
            .trim()
            .to_string()
    }

    /// Like [`TestServer::kubectl`], with `stdin` as kubectl's standard input
    /// (e.g. `apply -f -`).
    pub fn kubectl_stdin<I, S>(&self, args: I, stdin: &str) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run kubectl");
        let mut input = child.stdin.take().expect("stdin is piped");
        input
            .write_all(stdin.as_bytes())
            .expect("cannot write kubectl's stdin");
        drop(input);
        child.wait_with_output().expect("cannot wait for kubectl")
    }

    /// A kubectl command with this server's kubeconfig and a private discovery cache.
    pub fn kubectl_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(kubectl_bin());
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .arg("--cache-dir")
            .arg(self.root().join("kube-cache"))
            .args(args)
            .env_remove("KUBECONFIG");
        command
    }

    /// A kube-rs client for the admin kubeconfig. Needs a tokio runtime.
    pub async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig_path())
            .expect("cannot read the admin kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("cannot load the admin kubeconfig");
        kube::Client::try_from(config).expect("cannot build a kube client")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A plain HTTPS GET as the admin (client certificate). Returns the status code and
    /// the body as sent (not de-chunked). Blocking; no runtime needed.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        https_get(&self.kubeconfig_path(), path, true)
    }

    /// Like [`TestServer::get`], without any credentials (an anonymous request).
    pub fn get_anonymous(&self, path: &str) -> Result<(u16, String)> {
        https_get(&self.kubeconfig_path(), path, false)
    }

    /// Stops the server gracefully (SIGTERM; SIGKILL after [`STOP_TIMEOUT`]) and
    /// returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is not running");
        signal(&child, libc::SIGTERM);
        match wait_timeout(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let status = child.wait().expect("cannot wait for the server");
                self.fail(anyhow!(
                    "krust server did not stop within {STOP_TIMEOUT:?} after SIGTERM; killed it ({status}).\n{}",
                    self.log_tail()
                ))
            }
        }
    }

    /// Kills the server with SIGKILL (a crash) and waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (gracefully, if it runs) and starts it again with the same
    /// data dir, port and options; waits until it is ready.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            if !status.success() {
                self.fail(anyhow!(
                    "krust server exited with {status} on SIGTERM\n{}",
                    self.log_tail()
                ));
            }
        }
        if let Err(err) = self.spawn_and_wait() {
            self.fail(err);
        }
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The last lines of the server's stderr and stdout, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- krust server stderr (last {LOG_TAIL_LINES} lines, {}) ---\n{}\n--- stdout ---\n{}",
            self.log_path("stderr").display(),
            tail(&self.stderr(), LOG_TAIL_LINES),
            tail(&self.stdout(), LOG_TAIL_LINES)
        )
    }

    /// Panics with `err`, which already carries the log tail.
    fn fail(&mut self, err: anyhow::Error) -> ! {
        self.log_reported = true;
        panic!("{err:#}");
    }

    fn root(&self) -> &Path {
        self.temp
            .as_ref()
            .expect("temp dir is kept until drop")
            .path()
    }

    fn log_path(&self, stream: &str) -> PathBuf {
        self.root().join(format!("server.{stream}"))
    }

    /// Whether the last start failed because another process took the port.
    fn lost_port_race(&self) -> bool {
        let stderr = self.stderr().to_lowercase();
        stderr.contains("address already in use")
            || stderr.contains("address in use")
            || stderr.contains("os error 98")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.starts += 1;
        let stdout = self.open_log("stdout")?;
        let stderr = self.open_log("stderr")?;
        let mut command = Command::new(krust_bin());
        command
            .arg("server")
            .arg(format!("--bind-address={}", self.bind_ip()))
            .arg(format!("--port={}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir);
        if let Some(datastore) = &self.options.datastore {
            command.arg(format!("--datastore={datastore}"));
        }
        if !self.options.agent {
            command.arg("--disable-agent");
        }
        // Parallel servers on one address: each its own free DNS port unless the test says.
        if !self
            .options
            .extra_args
            .iter()
            .any(|a| a.contains("cluster-dns-port") || a.contains("disable-cluster-dns"))
        {
            command.arg("--cluster-dns-port=0");
        }
        // Names outside the cluster domain go nowhere beyond this machine: the
        // discard port on loopback refuses them at once.
        if !self
            .options
            .extra_args
            .iter()
            .any(|a| a.contains("cluster-dns-upstream"))
        {
            command.arg("--cluster-dns-upstream=127.0.0.1:9");
        }
        command
            .args(&self.options.extra_args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", krust_bin().display()))?;
        self.child = Some(child);
        self.wait_ready(READY_TIMEOUT)
    }

    /// Opens a log file for appending, with a marker line for this start.
    fn open_log(&self, stream: &str) -> Result<File> {
        let path = self.log_path(stream);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if self.starts > 1 {
            writeln!(file, "=== krust-e2e: start #{} ===", self.starts)?;
        }
        Ok(file)
    }

    /// Polls `/readyz` until it answers 200, the process exits, or `timeout` passes.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_error;
        loop {
            let child = self.child.as_mut().expect("spawned above");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "krust server exited with {status} before it was ready\n{}",
                    self.log_tail()
                );
            }
            if self.kubeconfig_path().exists() {
                match self.get("/readyz") {
                    Ok((200, _)) => return Ok(()),
                    Ok((status, body)) => last_error = format!("/readyz answered {status}: {body}"),
                    Err(err) => last_error = format!("{err:#}"),
                }
            } else {
                last_error = "the admin kubeconfig is not written yet".into();
            }
            if Instant::now() >= deadline {
                self.kill9();
                bail!(
                    "krust server was not ready within {timeout:?} (last check: {last_error}); killed it\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            if !self.log_reported {
                eprintln!("{}", self.log_tail());
            }
            keep_temp_dir_if_asked(&mut self.temp);
        }
    }
}

/// A running etcd (Debian's `/usr/bin/etcd`) on free 127.0.0.1 ports, for tests of the
/// etcd datastore. Killed on drop.
pub struct EtcdServer {
    temp: Option<tempfile::TempDir>,
    client_port: u16,
    child: Option<Child>,
    /// Set when a panic message already carried the log tail (Drop then skips it).
    log_reported: bool,
}

impl EtcdServer {
    /// How long etcd may take to report healthy.
    pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

    /// Starts etcd and waits until `/health` reports healthy. Panics with its log if not.
    pub fn start() -> EtcdServer {
        let temp = tempfile::Builder::new()
            .prefix("krust-e2e-etcd-")
            .tempdir()
            .expect("cannot create a temp dir for etcd");
        let mut etcd = EtcdServer {
            temp: Some(temp),
            client_port: 0,
            child: None,
            log_reported: false,
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match etcd.spawn_and_wait() {
                Ok(()) => return etcd,
                Err(err) => {
                    let lost_port_race = etcd.log().contains("address already in use");
                    last_error = Some(err);
                    if !lost_port_race {
                        break;
                    }
                }
            }
        }
        etcd.log_reported = true;
        panic!("{:#}", last_error.expect("at least one attempt"));
    }

    /// The `--datastore` value for krust: `etcd://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    /// The client endpoint: `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What etcd logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn root(&self) -> &Path {
        self.temp
            .as_ref()
            .expect("temp dir is kept until drop")
            .path()
    }

    fn log_path(&self) -> PathBuf {
        self.root().join("etcd.log")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.client_port = free_port();
        let peer_port = free_port();
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let data_dir = self.root().join("data");
        let _ = fs::remove_dir_all(&data_dir);
        let child = Command::new(etcd_bin())
            .arg("--name=krust-e2e")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=krust-e2e={peer_url}"))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {}; install etcd-server (scripts/install-deps.sh) or set ETCD_BIN",
                    etcd_bin().display()
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Self::READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("spawned above");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "etcd exited with {status} before it was healthy\n--- etcd log ---\n{}",
                    tail(&self.log(), LOG_TAIL_LINES)
                );
            }
            if let Ok((200, body)) = http_get(self.client_port, "/health")
                && body.contains("\"health\":\"true\"")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill9();
                bail!(
                    "etcd was not healthy within {:?}\n--- etcd log ---\n{}",
                    Self::READY_TIMEOUT,
                    tail(&self.log(), LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            if !self.log_reported {
                eprintln!(
                    "--- etcd log (last {LOG_TAIL_LINES} lines) ---\n{}",
                    tail(&self.log(), LOG_TAIL_LINES)
                );
            }
            keep_temp_dir_if_asked(&mut self.temp);
        }
    }
}

/// Runs `krust ARGS` to completion (killed after `timeout`) and returns its output.
/// For tests of the command line; `RUST_LOG` and `KUBECONFIG` are cleared.
pub fn run_krust<I, S>(args: I, timeout: Duration) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut child = Command::new(krust_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run krust");
    // Read the pipes on threads so a chatty process can not block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let status = match wait_timeout(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "krust did not exit within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// The krust binary: `$KRUST_BIN`, else `krust` in the target dir of this test executable.
pub fn krust_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("KRUST_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("cannot find the test executable");
    // Test executables live in target/<profile>/deps/; the binary in target/<profile>/.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is not inside a target dir");
    let candidate = profile_dir.join("krust");
    assert!(
        candidate.is_file(),
        "the krust binary is missing at {}: build it first with `cargo build -p krust` \
         (`make test` does), or set KRUST_BIN to its path",
        candidate.display()
    );
    candidate
}

/// kubectl: `$KUBECTL`, else `/usr/bin/kubectl`.
pub fn kubectl_bin() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"))
}

/// etcd: `$ETCD_BIN`, else `/usr/bin/etcd`.
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind 127.0.0.1:0 to find a free port")
        .port()
}

/// Polls `condition` every 50 ms until it is true; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn keep_temp_dir_if_asked(temp: &mut Option<tempfile::TempDir>) {
    if std::env::var_os("KRUST_E2E_KEEP").is_some()
        && let Some(temp) = temp.take()
    {
        eprintln!("krust-e2e: kept {}", temp.keep().display());
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child,
    // which has not been reaped yet (we still hold its `Child`).
    unsafe {
        libc::kill(pid, signal);
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A plain-HTTP GET on 127.0.0.1 (etcd's /health).
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    parse_response(&response)
}

/// An HTTPS GET with the CA, server and client certificate of a kubeconfig.
fn https_get(kubeconfig: &Path, path: &str, as_admin: bool) -> Result<(u16, String)> {
    let (mut tls, authority) = tls_connect(kubeconfig, as_admin, Duration::from_secs(5))?;
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    tls.flush()?;
    let mut response = Vec::new();
    // A server may close without close_notify; what arrived before is still the answer.
    let read_result = tls.read_to_end(&mut response);
    if response.is_empty() {
        read_result.context("no response")?;
    }
    parse_response(&response)
}

/// A TLS connection to the server of a kubeconfig, trusting its CA, with its client
/// certificate when `as_admin`; reads and writes fail after `io_timeout`. Also
/// returns the server's `IP:PORT`.
pub(crate) fn tls_connect(
    kubeconfig: &Path,
    as_admin: bool,
    io_timeout: Duration,
) -> Result<(
    rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    String,
)> {
    let text = fs::read_to_string(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let cluster = &config["clusters"][0]["cluster"];
    let user = &config["users"][0]["user"];
    let decode = |value: &serde_yaml::Value, what: &str| -> Result<Vec<u8>> {
        let text = value
            .as_str()
            .ok_or_else(|| anyhow!("the kubeconfig has no {what}"))?;
        Ok(BASE64.decode(text)?)
    };
    let ca = decode(
        &cluster["certificate-authority-data"],
        "certificate-authority-data",
    )?;
    let cert = decode(&user["client-certificate-data"], "client-certificate-data")?;
    let key = decode(&user["client-key-data"], "client-key-data")?;
    let server = cluster["server"]
        .as_str()
        .ok_or_else(|| anyhow!("the kubeconfig has no server"))?;
    let authority = server
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("server {server} is not https://"))?
        .trim_end_matches('/');
    let address: SocketAddr = authority
        .parse()
        .with_context(|| format!("server {server} is not https://IP:PORT"))?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(&ca)?)?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = if as_admin {
        builder.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(&cert)?],
            PrivateKeyDer::from_pem_slice(&key)?,
        )?
    } else {
        builder.with_no_client_auth()
    };
    let server_name = ServerName::IpAddress(address.ip().into());
    let connection = rustls::ClientConnection::new(Arc::new(config), server_name)?;
    let tcp = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    tcp.set_read_timeout(Some(io_timeout))?;
    tcp.set_write_timeout(Some(io_timeout))?;
    Ok((
        rustls::StreamOwned::new(connection, tcp),
        authority.to_string(),
    ))
}

fn parse_response(response: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {status_line:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_responses() {
        let (status, body) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "ok");
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn free_ports_are_nonzero() {
        assert_ne!(free_port(), 0);
    }
}
