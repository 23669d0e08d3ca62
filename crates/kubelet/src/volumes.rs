//! Pod volumes on the host: emptyDir, configMap, secret, downwardAPI, projected,
//! hostPath, inline CSI (published by `crate::csi::mount`) and persistentVolumeClaim (a bound claim's `local` or `hostPath`
//! volume, mounted where it is, or a CSI volume where `crate::csi::mount` had its
//! driver publish it; an unbound claim keeps the pod waiting), each under `<data-dir>/pods/<uid>/volumes/<name>`, and the bind mounts
//! a container gets from its volumeMounts (subPath, subPathExpr expanded from the
//! container's environment, readOnly). A claim's directory is given to the pod's
//! fsGroup.
//!
//! Files from the API (configMap, secret, downwardAPI, projected) are written the way
//! upstream's atomic writer does: into a fresh timestamped directory, then the
//! `..data` symlink is swapped to it in one rename, and each visible file is a
//! symlink through `..data`. A running container so sees either the old or the new
//! set of files, never a mix; [`sync`] is called on every pod sync, so changes to
//! the ConfigMap or Secret show up within seconds.
//!
//! Once a pod's volumes are set up, [`sync`] writes down which host directory holds
//! each and which claim is behind it, for [`crate::volume_stats`] to measure.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};

use crate::cri::api;
use crate::volume_stats::{PodVolumes, VolumeRecord};

/// Looks up the ConfigMaps and Secrets volumes and env refer to.
pub trait Objects {
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap>;
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret>;
    fn claim(&self, namespace: &str, name: &str) -> Option<PersistentVolumeClaim>;
    fn volume(&self, name: &str) -> Option<PersistentVolume>;
    /// The service account token issued for pod `pod_uid`'s projected source, by
    /// audience (empty: the API's) and requested lifetime.
    fn service_account_token(
        &self,
        pod_uid: &str,
        audience: &str,
        expiration: i64,
    ) -> Option<String>;
}

/// Objects for unit tests: the given ConfigMaps, claims (any namespace) and volumes,
/// nothing else.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct TestObjects {
    pub config_maps: Vec<ConfigMap>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub volumes: Vec<PersistentVolume>,
}

#[cfg(test)]
impl Objects for TestObjects {
    fn config_map(&self, _: &str, name: &str) -> Option<ConfigMap> {
        let named = |c: &&ConfigMap| c.metadata.name.as_deref() == Some(name);
        self.config_maps.iter().find(named).cloned()
    }
    fn secret(&self, _: &str, _: &str) -> Option<Secret> {
        None
    }
    fn claim(&self, _: &str, name: &str) -> Option<PersistentVolumeClaim> {
        let named = |c: &&PersistentVolumeClaim| c.metadata.name.as_deref() == Some(name);
        self.claims.iter().find(named).cloned()
    }
    fn volume(&self, name: &str) -> Option<PersistentVolume> {
        let named = |v: &&PersistentVolume| v.metadata.name.as_deref() == Some(name);
        self.volumes.iter().find(named).cloned()
    }
    fn service_account_token(&self, _: &str, _: &str, _: i64) -> Option<String> {
        None
    }
}

/// A pod's projected serviceAccountToken sources: (audience, expirationSeconds).
pub fn token_sources(pod: &Pod) -> Vec<(String, i64)> {
    let mut sources = Vec::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let projected = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten());
        for token in projected.filter_map(|source| source.service_account_token.as_ref()) {
            let wanted = (
                token.audience.clone().unwrap_or_default(),
                token.expiration_seconds.unwrap_or(3600),
            );
            if !sources.contains(&wanted) {
                sources.push(wanted);
            }
        }
    }
    sources
}

/// The claim a pod volume uses (its persistentVolumeClaim, or the claim
/// `<pod>-<volume>` of an ephemeral volume) and whether the pod mounts it read-only.
pub(crate) fn claim_of(pod: &Pod, volume: &Volume) -> Option<(String, bool)> {
    if let Some(source) = &volume.persistent_volume_claim {
        return Some((source.claim_name.clone(), source.read_only.unwrap_or(false)));
    }
    volume.ephemeral.as_ref().map(|_| {
        let pod_name = pod.metadata.name.as_deref().unwrap_or("");
        (format!("{pod_name}-{}", volume.name), false)
    })
}

/// The bound PersistentVolume of a claim; an error says what the pod waits for.
pub(crate) fn claim_volume(
    namespace: &str,
    claim_name: &str,
    objects: &dyn Objects,
) -> Result<PersistentVolume> {
    let Some(claim) = objects.claim(namespace, claim_name) else {
        bail!("persistentvolumeclaim {claim_name:?} not found");
    };
    if claim.metadata.deletion_timestamp.is_some() {
        bail!("persistentvolumeclaim {claim_name:?} is being deleted");
    }
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != Some("Bound") || volume_name.is_empty() {
        bail!("persistentvolumeclaim {claim_name:?} is not bound yet");
    }
    let Some(volume) = objects.volume(&volume_name) else {
        bail!("persistentvolume {volume_name:?} of claim {claim_name:?} not found");
    };
    Ok(volume)
}

/// Where a claim's volume is on this node.
struct ClaimDir {
    path: PathBuf,
    /// A hostPath volume: the host's directory, not storage of the pod's, so (as
    /// upstream) neither given to the pod's fsGroup nor measured.
    of_host: bool,
}

/// The host directory of a claim's volume; an error says what the pod waits for.
/// A CSI volume is where its driver published it for the pod, `csi_target`.
fn claim_dir(
    namespace: &str,
    claim_name: &str,
    objects: &dyn Objects,
    csi_target: &Path,
) -> Result<ClaimDir> {
    let volume = claim_volume(namespace, claim_name, objects)?;
    let volume_name = volume.metadata.name.clone().unwrap_or_default();
    let spec = volume.spec.unwrap_or_default();
    let path = match (&spec.local, &spec.host_path, &spec.csi) {
        (Some(local), _, _) => PathBuf::from(&local.path),
        (None, Some(host_path), _) => PathBuf::from(&host_path.path),
        (None, None, Some(csi)) => {
            if !is_listed_mount_point(csi_target) {
                bail!(
                    "persistentvolume {volume_name:?} is not yet published by CSI driver {:?}",
                    csi.driver
                );
            }
            return Ok(ClaimDir {
                path: csi_target.to_path_buf(),
                of_host: false,
            });
        }
        _ => bail!(
            "persistentvolume {volume_name:?} is of a kind this node cannot mount: use a local, hostPath or CSI volume"
        ),
    };
    if !path.is_dir() {
        bail!(
            "the directory {} of persistentvolume {volume_name:?} does not exist on this node",
            path.display()
        );
    }
    Ok(ClaimDir {
        path,
        of_host: spec.local.is_none() && spec.host_path.is_some(),
    })
}

/// The host directory of a pod's volume.
pub fn volume_dir(pods_dir: &Path, uid: &str, volume: &str) -> PathBuf {
    pods_dir.join(uid).join("volumes").join(volume)
}

/// Creates or refreshes every volume of the pod. Errors name the volume and what is
/// missing (e.g. a ConfigMap that does not exist).
pub fn sync(pods_dir: &Path, pod: &Pod, objects: &dyn Objects) -> Result<()> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    let mut record = PodVolumes {
        namespace: namespace.to_string(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: uid.to_string(),
        volumes: Vec::new(),
    };
    for volume in spec.volumes.iter().flatten() {
        let dir = volume_dir(pods_dir, uid, &volume.name);
        let mut measured = VolumeRecord {
            name: volume.name.clone(),
            path: dir.clone(),
            claim: None,
            ephemeral: true,
        };
        if let Some(files) = files_of(volume, pod, namespace, objects)? {
            let mode = default_mode(volume);
            write_atomic(&dir, &files, mode)
                .with_context(|| format!("volume {:?}", volume.name))?;
        } else if let Some((claim, read_only)) = claim_of(pod, volume) {
            let claimed = claim_dir(namespace, &claim, objects, &dir)
                .with_context(|| format!("volume {:?}", volume.name))?;
            if claimed.of_host {
                continue;
            }
            let marker = pods_dir.join(uid).join("fs-group").join(&volume.name);
            apply_fs_group(pod, &claimed.path, read_only, &marker)?;
            measured.path = claimed.path;
            measured.claim = Some(claim);
            measured.ephemeral = false;
        } else if let Some(inline) = &volume.csi {
            if !is_listed_mount_point(&dir) {
                bail!(
                    "volume {:?} is not yet published by CSI driver {:?}",
                    volume.name,
                    inline.driver
                );
            }
            measured.ephemeral = false; // The driver's storage, not the node's disk.
        } else if volume.host_path.is_some() {
            continue; // Not the pod's: not measured, as upstream.
        } else {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create volume dir {}", dir.display()))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
            if let Some(empty_dir) = &volume.empty_dir
                && empty_dir.medium.as_deref() == Some("Memory")
                && !is_mount_point(&dir)
            {
                let size = empty_dir
                    .size_limit
                    .as_ref()
                    .and_then(|q| crate::pods::parse_quantity(&q.0));
                mount_tmpfs(&dir, size).with_context(|| format!("volume {:?}", volume.name))?;
            }
            // A memory-backed emptyDir takes no disk.
            measured.ephemeral = volume
                .empty_dir
                .as_ref()
                .is_none_or(|e| e.medium.as_deref() != Some("Memory"));
        }
        record.volumes.push(measured);
    }
    crate::volume_stats::write_record(pods_dir, &record)
}

fn default_mode(volume: &Volume) -> u32 {
    let mode = volume
        .config_map
        .as_ref()
        .and_then(|c| c.default_mode)
        .or_else(|| volume.secret.as_ref().and_then(|s| s.default_mode))
        .or_else(|| volume.downward_api.as_ref().and_then(|d| d.default_mode))
        .or_else(|| volume.projected.as_ref().and_then(|p| p.default_mode))
        .unwrap_or(0o644);
    mode as u32
}

/// One file of a volume: contents and an optional own mode.
type Files = BTreeMap<String, (Vec<u8>, Option<u32>)>;

/// Picks `items` (or every key) out of `data`.
fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    what: &str,
    optional: bool,
) -> Result<Files> {
    let mut files = Files::new();
    match items {
        None => {
            for (key, value) in data {
                files.insert(key, (value, None));
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => {
                        files.insert(
                            item.path.clone(),
                            (value.clone(), item.mode.map(|m| m as u32)),
                        );
                    }
                    None if optional => {}
                    None => bail!("{what} has no key {:?}", item.key),
                }
            }
        }
    }
    Ok(files)
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    data
}

pub(crate) fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

fn config_map_files(
    namespace: &str,
    name: &str,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    optional: bool,
    objects: &dyn Objects,
) -> Result<Files> {
    match objects.config_map(namespace, name) {
        Some(cm) => select(
            config_map_data(&cm),
            items,
            &format!("configmap {name:?}"),
            optional,
        ),
        None if optional => Ok(Files::new()),
        None => bail!("configmap {name:?} not found"),
    }
}

fn secret_files(
    namespace: &str,
    name: &str,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    optional: bool,
    objects: &dyn Objects,
) -> Result<Files> {
    match objects.secret(namespace, name) {
        Some(secret) => select(
            secret_data(&secret),
            items,
            &format!("secret {name:?}"),
            optional,
        ),
        None if optional => Ok(Files::new()),
        None => bail!("secret {name:?} not found"),
    }
}

fn downward_files(
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
) -> Result<Files> {
    let mut files = Files::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            crate::pods::field_value(pod, &field.field_path)?
        } else {
            String::new()
        };
        files.insert(
            item.path.clone(),
            (value.into_bytes(), item.mode.map(|m| m as u32)),
        );
    }
    Ok(files)
}

/// The files an API-backed volume holds, or None for other kinds.
fn files_of(
    volume: &Volume,
    pod: &Pod,
    namespace: &str,
    objects: &dyn Objects,
) -> Result<Option<Files>> {
    if let Some(cm) = &volume.config_map {
        let optional = cm.optional.unwrap_or(false);
        return config_map_files(namespace, &cm.name, cm.items.as_ref(), optional, objects)
            .map(Some);
    }
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.as_deref().unwrap_or_default();
        let optional = secret.optional.unwrap_or(false);
        return secret_files(namespace, name, secret.items.as_ref(), optional, objects).map(Some);
    }
    if let Some(downward) = &volume.downward_api {
        return downward_files(pod, downward.items.as_deref().unwrap_or_default()).map(Some);
    }
    if let Some(projected) = &volume.projected {
        let mut files = Files::new();
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let optional = cm.optional.unwrap_or(false);
                files.extend(config_map_files(
                    namespace,
                    &cm.name,
                    cm.items.as_ref(),
                    optional,
                    objects,
                )?);
            }
            if let Some(secret) = &source.secret {
                let optional = secret.optional.unwrap_or(false);
                files.extend(secret_files(
                    namespace,
                    &secret.name,
                    secret.items.as_ref(),
                    optional,
                    objects,
                )?);
            }
            if let Some(downward) = &source.downward_api {
                files.extend(downward_files(
                    pod,
                    downward.items.as_deref().unwrap_or_default(),
                )?);
            }
            if let Some(token) = &source.service_account_token {
                let audience = token.audience.as_deref().unwrap_or_default();
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                let issued = objects
                    .service_account_token(uid, audience, token.expiration_seconds.unwrap_or(3600))
                    .context("the pod's service account token is not issued yet")?;
                files.insert(token.path.clone(), (issued.into_bytes(), None));
            }
        }
        return Ok(Some(files));
    }
    Ok(None)
}

/// Writes `files` into `dir` through the `..data` symlink swap; does nothing when the
/// current contents are the same.
fn write_atomic(dir: &Path, files: &Files, default_mode: u32) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        let current_dir = dir.join(current);
        let same = files.iter().all(|(path, (contents, _))| {
            std::fs::read(current_dir.join(path)).is_ok_and(|on_disk| &on_disk == contents)
        }) && count_files(&current_dir) == files.len();
        if same {
            return Ok(());
        }
    }
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%9f"));
    let new_dir = dir.join(&stamp);
    std::fs::create_dir_all(&new_dir)?;
    for (path, (contents, mode)) in files {
        if path.starts_with('/') || path.split('/').any(|part| part == "..") {
            bail!("item path {path:?} must be relative and must not contain '..'");
        }
        let file = new_dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, contents)?;
        std::fs::set_permissions(
            &file,
            std::fs::Permissions::from_mode(mode.unwrap_or(default_mode)),
        )?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link)?;
    let old = std::fs::read_link(&data_link).ok();
    std::fs::rename(&tmp_link, &data_link)?;
    // Top-level names point through ..data; names that disappeared are removed.
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p).to_string())
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("..") && !top.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// The bind mounts of one container, from its volumeMounts; `env` (the container's
/// environment) expands `$(VAR)` in subPathExpr.
pub fn mounts(
    pods_dir: &Path,
    pod: &Pod,
    container: &Container,
    objects: &dyn Objects,
    env: &std::collections::HashMap<&str, &str>,
) -> Result<Vec<api::Mount>> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .cloned()
        .unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.iter().find(|v| v.name == mount.name) else {
            bail!("volumeMount {:?} names no volume of the pod", mount.name);
        };
        let claim = claim_of(pod, volume);
        let mut host = match &volume.host_path {
            _ if claim.is_some() => {
                let (name, _) = claim.as_ref().expect("checked");
                let target = volume_dir(pods_dir, uid, &volume.name);
                claim_dir(namespace, name, objects, &target)
                    .with_context(|| format!("volume {:?}", volume.name))?
                    .path
            }
            Some(host_path) => {
                let path = PathBuf::from(&host_path.path);
                if matches!(host_path.type_.as_deref(), Some("DirectoryOrCreate")) {
                    std::fs::create_dir_all(&path)?;
                }
                path
            }
            None => volume_dir(pods_dir, uid, &volume.name),
        };
        let expanded = mount
            .sub_path_expr
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|expr| crate::pods::expand(expr, env));
        let sub_path = expanded.as_deref().or(mount.sub_path.as_deref());
        if let Some(sub) = sub_path.filter(|s| !s.is_empty()) {
            if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                bail!("subPath {sub:?} must be relative and must not contain '..'");
            }
            host = host.join(sub);
            if !host.exists() {
                std::fs::create_dir_all(&host)?;
            }
        }
        mounts.push(api::Mount {
            container_path: mount.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: mount.read_only.unwrap_or(false)
                || claim.as_ref().is_some_and(|(_, read_only)| *read_only)
                || volume
                    .csi
                    .as_ref()
                    .is_some_and(|c| c.read_only == Some(true))
                || volume.config_map.is_some()
                || volume.secret.is_some()
                || volume.downward_api.is_some()
                || volume.projected.is_some(),
            ..Default::default()
        });
    }
    Ok(mounts)
}

/// Gives a volume to the pod's fsGroup, as upstream's volume ownership: every file
/// and directory in it gets the group and group read and write permission (read only
/// for a read-only volume), directories also search permission and the setgid bit so
/// that what is made in them later inherits the group; symlinks get the group only.
/// Done once per pod (upstream does it when it mounts the volume for the pod):
/// `marker` records it. With `fsGroupChangePolicy: OnRootMismatch` nothing is changed
/// when the volume's root already has the group and the permissions.
fn apply_fs_group(pod: &Pod, dir: &Path, read_only: bool, marker: &Path) -> Result<()> {
    let context = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let Some(group) = context.and_then(|s| s.fs_group) else {
        return Ok(());
    };
    if marker.exists() {
        return Ok(());
    }
    let group = u32::try_from(group).context("fsGroup must not be negative")?;
    let file_bits = if read_only { 0o440 } else { 0o660 };
    let dir_bits = file_bits | 0o110 | 0o2000;
    let on_root_mismatch =
        context.and_then(|s| s.fs_group_change_policy.as_deref()) == Some("OnRootMismatch");
    let root = std::fs::metadata(dir)?;
    let root_matches = root.gid() == group && root.permissions().mode() & dir_bits == dir_bits;
    if !(on_root_mismatch && root_matches) {
        give_to_group(dir, group, file_bits, dir_bits)
            .with_context(|| format!("cannot give {} to fsGroup {group}", dir.display()))?;
    }
    if let Some(parent) = marker.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(marker, group.to_string())?;
    Ok(())
}

/// [`apply_fs_group`]'s walk: `path` and everything under it, symlinks not followed.
fn give_to_group(path: &Path, group: u32, file_bits: u32, dir_bits: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, None, Some(group))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let bits = if meta.is_dir() { dir_bits } else { file_bits };
    let mode = meta.permissions().mode();
    if mode & bits != bits {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | bits))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            give_to_group(&entry?.path(), group, file_bits, dir_bits)?;
        }
    }
    Ok(())
}

/// Whether `path` is a mount point in /proc/self/mountinfo (also a bind mount from
/// the same filesystem, which [`is_mount_point`] cannot tell).
pub(crate) fn is_listed_mount_point(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.display().to_string();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| point == wanted)
}

fn is_mount_point(dir: &Path) -> bool {
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(own), Some(Ok(parent))) => own.dev() != parent.dev(),
        _ => false,
    }
}

/// Mounts a tmpfs (emptyDir with medium Memory), sized by its sizeLimit if any.
fn mount_tmpfs(dir: &Path, size_bytes: Option<f64>) -> Result<()> {
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    let options = match size_bytes {
        Some(size) => format!("mode=0777,size={}", size as u64),
        None => "mode=0777".to_string(),
    };
    let options = std::ffi::CString::new(options)?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!(
            "cannot mount a tmpfs on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Unmounts whatever is mounted under `dir` (deepest first), e.g. tmpfs emptyDirs.
pub fn unmount_all_under(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let Ok(c_path) = std::ffi::CString::new(point) else {
            continue;
        };
        // SAFETY: umount2 with a NUL-terminated path; MNT_DETACH never blocks.
        unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), None)))
            .collect()
    }

    #[test]
    fn atomic_writer_swaps_data_and_removes_stale_keys() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        write_atomic(&vol, &files(&[("a", "1"), ("b", "2")]), 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "1");
        let first = std::fs::read_link(vol.join("..data")).unwrap();
        assert!(
            std::fs::symlink_metadata(vol.join("a"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // Same contents: nothing rewritten.
        write_atomic(&vol, &files(&[("a", "1"), ("b", "2")]), 0o644).unwrap();
        assert_eq!(std::fs::read_link(vol.join("..data")).unwrap(), first);
        // Changed: new data dir, old removed, dropped key gone.
        write_atomic(&vol, &files(&[("a", "3")]), 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "3");
        assert!(!vol.join("b").exists());
        assert!(!vol.join(&first).exists());
        let mode = std::fs::metadata(vol.join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn item_paths_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let error =
            write_atomic(&dir.path().join("v"), &files(&[("../x", "1")]), 0o644).unwrap_err();
        assert!(error.to_string().contains("must be relative"), "{error}");
    }

    #[test]
    fn missing_key_is_named() {
        let data = BTreeMap::from([("a".to_string(), b"1".to_vec())]);
        let items = vec![k8s_openapi::api::core::v1::KeyToPath {
            key: "zz".into(),
            path: "p".into(),
            mode: None,
        }];
        let error = select(data, Some(&items), "configmap \"c\"", false).unwrap_err();
        assert_eq!(error.to_string(), "configmap \"c\" has no key \"zz\"");
    }

    #[test]
    fn sync_records_the_measured_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let pods_dir = dir.path();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [], "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "config", "configMap": {"name": "c"}},
                {"name": "host", "hostPath": {"path": "/tmp"}},
            ]},
        }))
        .unwrap();
        let objects = TestObjects {
            config_maps: vec![
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "c"}, "data": {"k": "v"},
                }))
                .unwrap(),
            ],
            ..Default::default()
        };
        sync(pods_dir, &pod, &objects).unwrap();
        let text = std::fs::read(crate::volume_stats::record_path(pods_dir, "u1")).unwrap();
        let record: PodVolumes = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            (record.namespace.as_str(), record.name.as_str()),
            ("ns", "p")
        );
        // hostPath is not the pod's and is not measured.
        let names: Vec<&str> = record.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["scratch", "config"]);
        assert!(
            record
                .volumes
                .iter()
                .all(|v| v.ephemeral && v.claim.is_none())
        );
        assert_eq!(
            record.volumes[0].path,
            volume_dir(pods_dir, "u1", "scratch")
        );
    }
    fn fs_group_pod(policy: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u3"},
            "spec": {"containers": [],
                     "securityContext": {"fsGroup": 4322, "fsGroupChangePolicy": policy}},
        }))
        .unwrap()
    }

    /// The whole volume goes to the fsGroup (files rw, directories rwx and setgid, a
    /// symlink's target untouched), once per pod; OnRootMismatch leaves a volume whose
    /// root already matches alone.
    #[test]
    fn fs_group_takes_the_whole_volume_once() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("volume");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(volume.join("sub")).unwrap();
        std::fs::write(volume.join("sub/file"), "x").unwrap();
        std::fs::set_permissions(
            volume.join("sub/file"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(&outside, "y").unwrap();
        std::os::unix::fs::symlink(&outside, volume.join("link")).unwrap();
        let outside_before = std::fs::metadata(&outside).unwrap();
        let marker = dir.path().join("pods/u3/fs-group/data");

        apply_fs_group(&fs_group_pod(None), &volume, false, &marker).unwrap();
        let file = std::fs::metadata(volume.join("sub/file")).unwrap();
        assert_eq!((file.gid(), file.mode() & 0o7777), (4322, 0o660));
        let sub = std::fs::metadata(volume.join("sub")).unwrap();
        assert_eq!(sub.gid(), 4322);
        assert_eq!(sub.mode() & 0o2770, 0o2770);
        let outside_after = std::fs::metadata(&outside).unwrap();
        assert_eq!(outside_after.gid(), outside_before.gid());
        assert_eq!(outside_after.mode(), outside_before.mode());
        assert!(marker.exists());

        // Once per pod: a file made later is not walked again for the same pod.
        std::fs::write(volume.join("later"), "z").unwrap();
        std::os::unix::fs::chown(volume.join("later"), None, Some(0)).unwrap();
        apply_fs_group(&fs_group_pod(None), &volume, false, &marker).unwrap();
        assert_eq!(std::fs::metadata(volume.join("later")).unwrap().gid(), 0);

        // OnRootMismatch: the root matches, so nothing is walked; Always walks.
        let fresh = dir.path().join("pods/u3/fs-group/again");
        apply_fs_group(
            &fs_group_pod(Some("OnRootMismatch")),
            &volume,
            false,
            &fresh,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(volume.join("later")).unwrap().gid(), 0);
        std::fs::remove_file(&fresh).unwrap();
        apply_fs_group(&fs_group_pod(Some("Always")), &volume, false, &fresh).unwrap();
        assert_eq!(std::fs::metadata(volume.join("later")).unwrap().gid(), 4322);
    }

    /// A claim's local volume is the pod's storage: given to its fsGroup and measured.
    /// A hostPath one is the host's (it may be `/`): neither, as upstream.
    #[test]
    fn claims_on_host_path_volumes_are_neither_chowned_nor_measured() {
        let dir = tempfile::tempdir().unwrap();
        let pods_dir = dir.path().join("pods");
        let (local_dir, host_dir) = (dir.path().join("local"), dir.path().join("host"));
        std::fs::create_dir_all(&local_dir).unwrap();
        std::fs::create_dir_all(&host_dir).unwrap();
        let bound = |name: &str| -> PersistentVolumeClaim {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"volumeName": format!("pv-{name}")},
                "status": {"phase": "Bound"},
            }))
            .unwrap()
        };
        let local: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv-mine"}, "spec": {"local": {"path": local_dir}},
        }))
        .unwrap();
        let host: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv-hosts"}, "spec": {"hostPath": {"path": host_dir}},
        }))
        .unwrap();
        let objects = TestObjects {
            claims: vec![bound("mine"), bound("hosts")],
            volumes: vec![local, host],
            ..Default::default()
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u2"},
            "spec": {"containers": [], "securityContext": {"fsGroup": 4321}, "volumes": [
                {"name": "mine", "persistentVolumeClaim": {"claimName": "mine"}},
                {"name": "hosts", "persistentVolumeClaim": {"claimName": "hosts"}},
            ]},
        }))
        .unwrap();
        let host_group = std::fs::metadata(&host_dir).unwrap().gid();
        sync(&pods_dir, &pod, &objects).unwrap();
        assert_eq!(std::fs::metadata(&local_dir).unwrap().gid(), 4321);
        assert_eq!(std::fs::metadata(&host_dir).unwrap().gid(), host_group);
        let text = std::fs::read(crate::volume_stats::record_path(&pods_dir, "u2")).unwrap();
        let record: PodVolumes = serde_json::from_slice(&text).unwrap();
        let names: Vec<&str> = record.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["mine"]);
        assert_eq!(record.volumes[0].path, local_dir);
    }
}
