//! Test support shared by the store's integration tests: opening each backend,
//! including a private etcd server started (and killed) by the test itself.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use krust_store::Store;

/// Where the tests expect Debian's etcd (3.4, v3 API).
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// A store under test and whatever must live as long as it (a temp dir, a server).
pub struct Backend {
    pub store: Arc<dyn Store>,
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

pub async fn memory() -> Backend {
    Backend {
        store: Arc::new(krust_store::memory::MemoryStore::new()),
        _guard: Box::new(()),
    }
}

pub async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("state.db");
    let store = krust_store::sqlite::SqliteStore::open(&path).expect("open the SQLite store");
    // The store is dropped before the directory (fields drop in order: `store` first).
    Backend {
        store: Arc::new(store),
        _guard: Box::new(dir),
    }
}

pub async fn etcd() -> Backend {
    let server = EtcdServer::start().await;
    let store = krust_store::etcd::EtcdStore::connect(std::slice::from_ref(&server.endpoint))
        .await
        .expect("connect to the test etcd");
    Backend {
        store: Arc::new(store),
        _guard: Box::new(server),
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; a race with other processes is
/// handled by retrying the server start).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A private etcd: its own temp data dir and ports. Killed (SIGKILL) on drop.
pub struct EtcdServer {
    child: Child,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl EtcdServer {
    pub async fn start() -> EtcdServer {
        assert!(
            Path::new(ETCD_BIN).exists(),
            "{ETCD_BIN} is missing, so the etcd contract tests can not run. \
             Install the test dependencies with `make test` or `scripts/install-deps.sh` \
             (Debian package `etcd-server`)."
        );
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("create a temp dir for etcd");
            let (client, peer) = (free_port(), free_port());
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log_path = dir.path().join("etcd.log");
            let log = std::fs::File::create(&log_path).expect("create the etcd log file");
            let child = Command::new(ETCD_BIN)
                .arg("--name=default")
                .arg(format!("--data-dir={}", dir.path().join("data").display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=default={peer_url}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log file handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start {ETCD_BIN}: {e}"));
            let mut server = EtcdServer {
                child,
                endpoint: client_url,
                dir,
            };
            if server.wait_ready(client).await {
                return server;
            }
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
            // Dropping `server` kills it; try again on other ports.
        }
        panic!("etcd did not start after 3 attempts; its last log:\n{last_log}");
    }

    /// Waits until etcd answers requests; false if it exited or took too long.
    async fn wait_ready(&mut self, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let connect =
                    krust_store::etcd::EtcdStore::connect(std::slice::from_ref(&self.endpoint));
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
