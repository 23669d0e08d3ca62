//! Test images, built locally from busybox-static (no registry on the internet is
//! reachable): OCI layouts made by the agent's own image builder
//! (`krust_kubelet::oci`), cached under the target dir so that repeated runs reuse
//! them, and pushed into a [`crate::registry::TestRegistry`].
//!
//! - `krust/busybox:1`: busybox (sh, httpd, nc, nslookup, wget, sleep, ...), default
//!   command `sh`; tests give each container its own command.
//! - `krust/httpd:1`: busybox httpd serving `/var/www` on port 8080 in the foreground,
//!   with `index.html` ("hello from krust") and `healthz` ("ok").
//! - `krust/testserver:1`: busybox plus `krust-testserver` (tests/testserver: hostname,
//!   echo, client IP, exit codes, dial, DNS lookups; HTTP on 8080, UDP on 8081) as the
//!   entrypoint, built from this repository and linked statically on first use.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use krust_kubelet::oci::{self, ImageSpec};

/// A test image: its repository path and tag in a registry, and what is inside.
pub struct TestImage {
    /// Repository and tag, e.g. `krust/busybox:1`.
    pub name: &'static str,
    pub spec: ImageSpec,
}

/// Every test image.
pub fn all() -> Vec<TestImage> {
    let mut busybox = ImageSpec::busybox("krust/busybox:1", &[]);
    busybox.cmd = vec!["sh".into()];
    let mut httpd = ImageSpec::busybox(
        "krust/httpd:1",
        &["/bin/httpd", "-f", "-p", "8080", "-h", "/var/www"],
    );
    httpd.files = vec![
        (
            "var/www/index.html".into(),
            b"hello from krust\n".to_vec(),
            0o644,
        ),
        ("var/www/healthz".into(), b"ok\n".to_vec(), 0o644),
    ];
    let mut testserver = ImageSpec::busybox("krust/testserver:1", &["/bin/krust-testserver"]);
    let binary = testserver_binary().expect("cannot build the test server");
    let binary = std::fs::read(binary).expect("cannot read the test server binary");
    testserver.files = vec![("bin/krust-testserver".into(), binary, 0o755)];
    vec![
        TestImage {
            name: "krust/busybox:1",
            spec: busybox,
        },
        TestImage {
            name: "krust/httpd:1",
            spec: httpd,
        },
        TestImage {
            name: "krust/testserver:1",
            spec: testserver,
        },
    ]
}

/// The `krust-testserver` executable, built once per test process with cargo in
/// release mode and statically linked (`+crt-static`, so the image needs no shared
/// libraries) into its own target dir `<target>/testserver`; cargo's lock keeps
/// parallel test processes from building it twice at once.
fn testserver_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_testserver().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_testserver() -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir = cache_dir()
        .parent()
        .map(|target| target.join("testserver"))
        .context("the test image cache has no parent dir")?;
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--release", "--quiet", "-p", "krust-testserver"])
        .arg("--target")
        .arg(&triple)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .context("cannot run cargo to build the test server")?;
    if !output.status.success() {
        bail!(
            "building krust-testserver failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(target_dir.join(triple).join("release/krust-testserver"))
}

/// Where built layouts are cached: `<target>/krust-test-images`.
fn cache_dir() -> PathBuf {
    let binary = crate::krust_bin();
    binary
        .parent()
        .and_then(|profile| profile.parent())
        .map(|target| target.join("krust-test-images"))
        .unwrap_or_else(|| std::env::temp_dir().join("krust-test-images"))
}

/// The OCI layout of `image`, built on first use. A stamp of the busybox binary's
/// size and mtime plus the spec decides whether the cached layout is current; a
/// layout is built in a private directory and renamed into place, so parallel tests
/// never see half of one.
pub fn layout(image: &TestImage) -> Result<PathBuf> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    let dir_name = image.name.replace(['/', ':'], "_");
    let target = cache.join(&dir_name);
    let busybox = std::fs::metadata(oci::BUSYBOX).context("busybox-static is missing")?;
    let mut contents = std::collections::hash_map::DefaultHasher::new();
    image.spec.files.hash(&mut contents);
    let stamp = format!(
        "{}:{:?}:{:?}:{:?}:{:x}",
        busybox.len(),
        busybox.modified().ok(),
        image.spec.entrypoint,
        image.spec.cmd,
        contents.finish()
    );
    let stamp_file = target.join("krust-stamp");
    if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(target);
    }
    let building = cache.join(format!("{dir_name}.{}.tmp", std::process::id()));
    oci::write_layout(&image.spec, &building)?;
    std::fs::write(building.join("krust-stamp"), &stamp)?;
    let _ = std::fs::remove_dir_all(&target);
    if let Err(error) = std::fs::rename(&building, &target) {
        // Another test won the race with the same contents.
        let _ = std::fs::remove_dir_all(&building);
        if !stamp_file.exists() {
            return Err(error).context("cannot move the built image into the cache");
        }
    }
    Ok(target)
}
