//! The test CSI driver (`tests/csi-driver`, `krust-test-csi`) as a process on a test
//! node: built from the repository with cargo once per test process, started with
//! its registration socket in the node agent's plugin registry, stopped (SIGTERM,
//! so it removes its sockets) and its directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The driver binary: `$KRUST_TEST_CSI_BIN`, else built (once per process) with
/// `cargo build -p krust-test-csi` into the target dir the krust binary is in.
pub fn driver_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("KRUST_TEST_CSI_BIN") {
        return PathBuf::from(path);
    }
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let krust = crate::krust_bin();
            let profile = krust.parent().expect("the krust binary has a directory");
            let target = profile
                .parent()
                .expect("the profile dir is in a target dir");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let status = Command::new(cargo)
                .current_dir(&workspace)
                .args(["build", "-q", "-p", "krust-test-csi", "--target-dir"])
                .arg(target)
                .status()
                .expect("cannot run cargo to build krust-test-csi");
            assert!(status.success(), "cargo build -p krust-test-csi failed");
            profile.join("krust-test-csi")
        })
        .clone()
}

/// A running test driver.
pub struct TestCsiDriver {
    pub name: String,
    child: Option<Child>,
    work: tempfile::TempDir,
}

impl TestCsiDriver {
    /// Starts the driver `name` for node id `node_id`, registering through
    /// `registry_dir`; `extra` are more flags (`--topology-key=...`, `--no-stage`).
    pub fn start(name: &str, node_id: &str, registry_dir: &Path, extra: &[&str]) -> TestCsiDriver {
        let work = tempfile::Builder::new()
            .prefix("krust-e2e-csi-")
            .tempdir()
            .expect("temp dir");
        let log = std::fs::File::create(work.path().join("driver.log")).expect("driver log");
        let child = Command::new(driver_bin())
            .arg(format!("--name={name}"))
            .arg(format!("--root={}", work.path().join("root").display()))
            .arg(format!(
                "--endpoint={}",
                work.path().join("csi.sock").display()
            ))
            .arg(format!("--registration-dir={}", registry_dir.display()))
            .arg(format!("--node-id={node_id}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot start krust-test-csi");
        TestCsiDriver {
            name: name.to_string(),
            child: Some(child),
            work,
        }
    }

    /// The calls the driver served, one `<Call> <volume id>` a line.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.work.path().join("root/calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The driver's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.path().join("driver.log")).unwrap_or_default()
    }

    /// A volume's directory in the driver.
    pub fn volume_dir(&self, id: &str) -> PathBuf {
        self.work.path().join("root/volumes").join(id)
    }

    /// What an inline volume was published with (`volumeContext`, the names of the
    /// `secrets`, `readonly`), while it is published.
    pub fn published(&self, id: &str) -> Option<serde_json::Value> {
        let path = self.work.path().join(format!("root/published/{id}.json"));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Stops the driver (SIGTERM, then waits); it removes its sockets.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
            // SAFETY: a plain kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for TestCsiDriver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- krust-test-csi log ---\n{}", self.log());
        }
        self.stop();
    }
}
