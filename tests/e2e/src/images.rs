//! Test images, built locally from busybox-static (no registry on the internet is
//! reachable): OCI layouts made by the agent's own image builder
//! (`krust_kubelet::oci`), cached under the target dir so that repeated runs reuse
//! them, and pushed into a [`crate::registry::TestRegistry`].
//!
//! - `krust/busybox:1`: busybox (sh, httpd, nc, nslookup, wget, sleep, ...), default
//!   command `sh`; tests give each container its own command.
//! - `krust/httpd:1`: busybox httpd serving `/var/www` on port 8080 in the foreground,
//!   with `index.html` ("hello from krust") and `healthz` ("ok").

use std::path::PathBuf;

use anyhow::{Context, Result};
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
    vec![
        TestImage {
            name: "krust/busybox:1",
            spec: busybox,
        },
        TestImage {
            name: "krust/httpd:1",
            spec: httpd,
        },
    ]
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
    let stamp = format!(
        "{}:{:?}:{:?}:{:?}:{:?}",
        busybox.len(),
        busybox.modified().ok(),
        image.spec.entrypoint,
        image.spec.cmd,
        image.spec.files
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
