//! `krust killall`: stops a node and removes what it made on the host, as k3s's
//! killall script does: the krust process running the node (recorded in
//! `<agent-data-dir>/krust.pid` while it runs), every pod sandbox with its containers,
//! network namespace, mounts and cgroups, the node's containerd, the pod bridge, the
//! routes, and the nftables tables and iptables chains of the pod network, the service
//! proxy and NetworkPolicy. The data dirs (datastore, certificates, images) stay, so
//! `krust server` or `krust agent` starts again where it was.
//!
//! A running node never removes these itself: pods and Services keep working while
//! the agent restarts. Everything here is skipped where it is not there, so running it
//! twice is fine. The network part acts on the network namespace it runs in.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::KillallArgs;

/// The file, in the agent data dir, that holds the pid of the process running the node.
pub const PID_FILE: &str = "krust.pid";

/// How long the node's process has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The pid file of a running node; removed when dropped (the process ends cleanly).
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Records this process as the one running the node of `agent_dir`.
    pub fn write(agent_dir: &Path) -> Result<PidFile> {
        std::fs::create_dir_all(agent_dir)
            .with_context(|| format!("cannot create {}", agent_dir.display()))?;
        let path = agent_dir.join(PID_FILE);
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(PidFile { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own record: a later process may have written its own since.
        if read_pid(&self.path) == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live krust process (its executable is named krust...).
fn is_krust_process(pid: u32) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    exe.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("krust"))
}

/// Runs `krust killall`.
pub fn run(args: KillallArgs) -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("krust killall must run as root (it stops containers and removes network devices)");
    }
    let agent_dir = args
        .agent_data_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("agent"));
    stop_node_process(&agent_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        if agent_dir.exists() {
            krust_kubelet::teardown(&agent_dir, &args.cni_bridge)
                .await
                .context("cannot remove the node's pods")?;
            println!(
                "removed the pods and containerd of {} and the bridge {}",
                agent_dir.display(),
                args.cni_bridge
            );
        } else {
            println!(
                "{} does not exist: no pods to remove (give the node's --data-dir or --agent-data-dir)",
                agent_dir.display()
            );
        }
        krust_proxy::teardown().await?;
        Ok::<(), anyhow::Error>(())
    })?;
    krust_netpol::teardown(&args.cni_bridge);
    krust_net::teardown(&args.cni_bridge);
    println!("removed the service proxy's, NetworkPolicy's and pod network's rules and routes");
    let _ = std::fs::remove_file(agent_dir.join(PID_FILE));
    Ok(())
}

/// Stops the process recorded in the pid file of `agent_dir`, if it still runs:
/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
fn stop_node_process(agent_dir: &Path) -> Result<()> {
    let Some(pid) = read_pid(&agent_dir.join(PID_FILE)) else {
        return Ok(());
    };
    if pid == std::process::id() || !is_krust_process(pid) {
        return Ok(());
    }
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return Ok(());
    };
    // SAFETY: kill(2) on a pid checked above to be a krust process.
    unsafe { libc::kill(raw, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_GRACE;
    while is_krust_process(pid) {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(raw, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A killed process is gone once its parent has reaped it; wait for that briefly.
    let reaped = Instant::now() + Duration::from_secs(5);
    while is_krust_process(pid) && Instant::now() < reaped {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopped krust (pid {pid})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_file_holds_this_process_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let agent_dir = dir.path().join("agent");
        let pid_file = PidFile::write(&agent_dir).unwrap();
        assert_eq!(
            read_pid(&agent_dir.join(PID_FILE)),
            Some(std::process::id())
        );
        drop(pid_file);
        assert!(!agent_dir.join(PID_FILE).exists());
    }

    #[test]
    fn a_pid_file_another_process_wrote_since_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = PidFile::write(dir.path()).unwrap();
        std::fs::write(dir.path().join(PID_FILE), "1\n").unwrap();
        drop(pid_file);
        assert_eq!(read_pid(&dir.path().join(PID_FILE)), Some(1));
    }

    #[test]
    fn only_krust_executables_count_as_the_node_process() {
        // The test binary is named after the crate: krust-<hash>.
        assert!(is_krust_process(std::process::id()));
        assert!(!is_krust_process(u32::MAX), "no such process");
    }
}
