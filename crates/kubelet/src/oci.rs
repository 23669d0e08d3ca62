//! Builds small OCI images locally, without a registry: a busybox-static root
//! filesystem (busybox and its applet links) plus optional extra files, packed as one
//! uncompressed tar layer with its config, manifest and index.
//!
//! The agent builds its pause (sandbox) image this way, since no registry can be
//! reached; the test tooling builds its workload images with the same code and pushes
//! them to a local registry. The result is an OCI image layout directory (what
//! `skopeo copy oci:DIR:TAG` reads) or the same layout as one tar archive (what
//! `ctr images import` reads).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;

/// Where Debian's busybox-static lives.
pub const BUSYBOX: &str = "/bin/busybox";

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// What goes into an image.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// Full reference the image is known by, e.g. `docker.io/krust/pause:1`.
    pub reference: String,
    /// The image's entrypoint (`ENTRYPOINT`).
    pub entrypoint: Vec<String>,
    /// The image's default arguments (`CMD`).
    pub cmd: Vec<String>,
    /// Extra files: path inside the image (relative, e.g. `www/index.html`), contents, mode.
    pub files: Vec<(String, Vec<u8>, u32)>,
}

impl ImageSpec {
    /// A busybox image with the given entrypoint and no extra files.
    pub fn busybox(reference: &str, entrypoint: &[&str]) -> ImageSpec {
        ImageSpec {
            reference: reference.to_string(),
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: Vec::new(),
            files: Vec::new(),
        }
    }

    /// The tag part of the reference (`latest` when there is none).
    pub fn tag(&self) -> &str {
        let last = self.reference.rsplit('/').next().unwrap_or(&self.reference);
        last.split_once(':').map(|(_, tag)| tag).unwrap_or("latest")
    }
}

/// Lists the applets the busybox binary provides.
fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (install busybox-static: scripts/install-deps.sh)",
                busybox.display()
            )
        })?;
    if !output.status.success() {
        bail!("{} --list failed", busybox.display());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains('/') && *name != "busybox")
        .map(str::to_string)
        .collect())
}

/// The root filesystem as one tar layer.
fn build_layer(spec: &ImageSpec) -> Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("cannot read {BUSYBOX} (install busybox-static)"))?;
    let applets = busybox_applets(Path::new(BUSYBOX))?;
    let mut builder = tar::Builder::new(Vec::new());
    let directory = |builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_size(0);
        header.set_mtime(0);
        builder.append_data(&mut header, path, std::io::empty())
    };
    for dir in ["bin", "dev", "etc", "proc", "sys", "root", "var", "var/www"] {
        directory(&mut builder, dir, 0o755)?;
    }
    directory(&mut builder, "tmp", 0o1777)?;
    let file = |builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        builder.append_data(&mut header, path, data)
    };
    file(&mut builder, "bin/busybox", &busybox, 0o755)?;
    file(
        &mut builder,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        0o644,
    )?;
    file(
        &mut builder,
        "etc/group",
        b"root:x:0:\nnobody:x:65534:\n",
        0o644,
    )?;
    for (path, data, mode) in &spec.files {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            directory(&mut builder, parent, 0o755)?;
        }
        file(&mut builder, path, data, *mode)?;
    }
    for applet in applets {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        header.set_mtime(0);
        builder.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    Ok(builder.into_inner()?)
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `spec` as an OCI image layout in `dir` (created; replaced if it exists).
/// Returns the manifest digest (`sha256:...`).
pub fn write_layout(spec: &ImageSpec, dir: &Path) -> Result<String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)
        .with_context(|| format!("cannot create {}", blobs.display()))?;
    let put = |data: &[u8]| -> Result<(String, usize)> {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data)?;
        Ok((format!("sha256:{hex}"), data.len()))
    };
    let layer = build_layer(spec)?;
    let (layer_digest, layer_size) = put(&layer)?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size },
        "layers": [{ "mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer_size }],
    });
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {
                "io.containerd.image.name": spec.reference,
                "org.opencontainers.image.ref.name": spec.tag(),
            },
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(manifest_digest)
}

/// Packs an OCI layout directory into one tar archive at `archive`.
pub fn write_archive(layout: &Path, archive: &Path) -> Result<PathBuf> {
    let file = std::fs::File::create(archive)
        .with_context(|| format!("cannot create {}", archive.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.follow_symlinks(false);
    builder.append_dir_all(".", layout)?;
    builder.into_inner()?.flush()?;
    Ok(archive.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_of_reference() {
        assert_eq!(
            ImageSpec::busybox("docker.io/krust/pause:1", &[]).tag(),
            "1"
        );
        assert_eq!(
            ImageSpec::busybox("127.0.0.1:5000/busybox", &[]).tag(),
            "latest"
        );
    }

    #[test]
    fn layout_has_consistent_digests() {
        if !Path::new(BUSYBOX).exists() {
            eprintln!("skipped: {BUSYBOX} is missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ImageSpec::busybox("example.test/img:2", &["/bin/sleep", "inf"]);
        spec.files
            .push(("www/index.html".into(), b"hello".to_vec(), 0o644));
        let digest = write_layout(&spec, &dir.path().join("img")).unwrap();
        let blob = |digest: &str| {
            let hex = digest.strip_prefix("sha256:").unwrap();
            let data = std::fs::read(dir.path().join("img/blobs/sha256").join(hex)).unwrap();
            assert_eq!(sha256_hex(&data), hex, "blob content matches its name");
            data
        };
        let manifest: serde_json::Value = serde_json::from_slice(&blob(&digest)).unwrap();
        let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
        let mut archive = tar::Archive::new(layer.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"bin/sh".to_string()), "{names:?}");
        assert!(names.contains(&"www/index.html".to_string()));
        let config: serde_json::Value =
            serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!(["/bin/sleep", "inf"]));
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("img/index.json")).unwrap())
                .unwrap();
        assert_eq!(index["manifests"][0]["digest"], json!(digest));
    }
}
