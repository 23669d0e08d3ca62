//! A local OCI registry for tests: Debian's `docker-registry` on a free 127.0.0.1
//! port with storage in a temp dir, filled with the test images (see [`crate::images`])
//! by `skopeo copy`. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running registry.
pub struct TestRegistry {
    _temp: tempfile::TempDir,
    ip: std::net::Ipv4Addr,
    port: u16,
    child: Child,
}

impl TestRegistry {
    /// Starts a registry and pushes every test image into it.
    pub fn start_with_test_images() -> TestRegistry {
        Self::start_with_test_images_on(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Like [`TestRegistry::start_with_test_images`], listening on `ip` (e.g. a test
    /// bridge's address, so that nodes in other network namespaces can pull).
    pub fn start_with_test_images_on(ip: std::net::Ipv4Addr) -> TestRegistry {
        let registry = Self::start_on(ip).expect("cannot start the test registry");
        for image in crate::images::all() {
            let layout = crate::images::layout(&image).expect("cannot build a test image");
            registry
                .push(&layout, image.spec.tag(), image.name)
                .expect("cannot push a test image");
        }
        registry
    }

    /// Starts an empty registry and waits until it answers.
    pub fn start() -> Result<TestRegistry> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Starts an empty registry on `ip` and waits until it answers.
    pub fn start_on(ip: std::net::Ipv4Addr) -> Result<TestRegistry> {
        let temp = tempfile::Builder::new()
            .prefix("krust-registry-")
            .tempdir()?;
        let port = crate::free_port();
        let config = temp.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {ip}:{port}\n",
                temp.path().join("data").display()
            ),
        )?;
        let log = std::fs::File::create(temp.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start docker-registry (scripts/install-deps.sh installs it)")?;
        let mut registry = TestRegistry {
            _temp: temp,
            ip,
            port,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = registry.child.try_wait()? {
                bail!("docker-registry exited with {status}");
            }
            if std::net::TcpStream::connect((ip, port)).is_ok() {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on {ip}:{port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `<ip>:<port>`.
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// The full reference of a repository path in this registry.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }

    /// Pushes the OCI layout's `tag` as `name` (repository:tag).
    pub fn push(&self, layout: &Path, tag: &str, name: &str) -> Result<()> {
        let output = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false", "-q"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}", self.image(name)))
            .output()
            .context("cannot run skopeo (scripts/install-deps.sh installs it)")?;
        if !output.status.success() {
            bail!(
                "skopeo copy to {} failed: {}",
                self.image(name),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Writes containerd's hosts configuration (certs.d layout) that sends pulls
    /// for this registry over plain HTTP; returns the directory for
    /// `--registry-config`.
    pub fn write_hosts_config(&self, dir: &Path) -> Result<PathBuf> {
        let host_dir = dir.join(self.host());
        std::fs::create_dir_all(&host_dir)?;
        std::fs::write(
            host_dir.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n",
                host = self.host()
            ),
        )?;
        Ok(dir.to_path_buf())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
