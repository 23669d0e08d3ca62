//! Running the proxy's commands ([`Commands`]: a command prefix or a network
//! namespace for tests), and applying a [`Ruleset`] to the kernel ([`Applier`]): one
//! `nft -f -` transaction per change, rendering only the difference from what the
//! last successful apply left.

use std::os::fd::AsRawFd;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

use crate::ruleset::{Ruleset, TABLE};

/// Runs the proxy's commands (`nft`, `iptables-restore`, `sysctl`), optionally
/// behind a command prefix such as `ip netns exec <ns>`, or inside a named network
/// namespace that each command enters itself (how tests and benchmarks aim the rules
/// at a network namespace).
#[derive(Debug, Default)]
pub struct Commands {
    prefix: Vec<String>,
    /// `/run/netns/<name>`, opened once; each command `setns`es into it before exec.
    netns: Option<std::fs::File>,
}

impl Commands {
    /// Commands run after `prefix` (empty: directly).
    pub fn new(prefix: Vec<String>) -> Commands {
        Commands {
            prefix,
            netns: None,
        }
    }

    /// Commands run in the network namespace `name` (made by `ip netns add`),
    /// entered with one `setns` per command: no `ip netns exec`.
    pub fn in_network_namespace(name: &str) -> Result<Commands> {
        let path = format!("/run/netns/{name}");
        let file = std::fs::File::open(&path).with_context(|| {
            format!("cannot open {path}: create the namespace with `ip netns add {name}`")
        })?;
        Ok(Commands {
            prefix: Vec::new(),
            netns: Some(file),
        })
    }

    /// Whether `program` is on the PATH.
    pub fn exists(&self, program: &str) -> bool {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    }

    /// Runs `command` (with `stdin` as its input) and returns its output; fails with
    /// its error output when it fails.
    pub async fn output(&self, command: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut argv: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        argv.extend_from_slice(command);
        let mut command_line = tokio::process::Command::new(argv[0]);
        if let Some(netns) = &self.netns {
            let fd = netns.as_raw_fd();
            // SAFETY: between fork and exec the closure only makes one system call
            // (setns) and reads errno; it allocates nothing and takes no lock.
            unsafe {
                command_line.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command_line
            .args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {:?}: is {} installed?",
                    argv.join(" "),
                    command[0]
                )
            })?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().context("no stdin pipe")?;
            pipe.write_all(input.as_bytes()).await?;
            drop(pipe);
        }
        let output = child.wait_with_output().await?;
        if !output.status.success() {
            bail!(
                "{} failed ({}): {}",
                argv.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Lets node ports answer on 127.0.0.1 (DNAT of loopback traffic needs it).
    pub async fn enable_route_localnet(&self) -> Result<()> {
        self.output(
            &["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"],
            None,
        )
        .await
        .map(drop)
    }
}

/// Applies the nftables [`Ruleset`]: the whole table first, then only differences.
#[derive(Debug, Default)]
pub struct Applier {
    commands: Commands,
    applied: Option<Ruleset>,
}

impl Applier {
    /// An applier running its commands after `prefix` (empty: directly).
    pub fn new(prefix: Vec<String>) -> Applier {
        Applier::with_commands(Commands::new(prefix))
    }

    /// An applier running its commands with `commands`.
    pub fn with_commands(commands: Commands) -> Applier {
        Applier {
            commands,
            applied: None,
        }
    }

    /// An applier whose commands run in the network namespace `name` (made by
    /// `ip netns add`), entered with one `setns` per command: no `ip netns exec`.
    pub fn in_network_namespace(name: &str) -> Result<Applier> {
        Ok(Applier::with_commands(Commands::in_network_namespace(
            name,
        )?))
    }

    /// Brings the table to `desired`; returns whether anything had to change. After a
    /// failure the next call rewrites the whole table.
    pub async fn apply(&mut self, desired: Ruleset) -> Result<bool> {
        let script = desired.render(self.applied.as_ref());
        if script.is_empty() {
            return Ok(false);
        }
        self.applied = None;
        if let Err(error) = self.nft(&script).await {
            // A diff may fail where the kernel drifted from our record: rewrite it all.
            tracing::warn!(
                error = format!("{error:#}"),
                "partial nft sync failed; full sync"
            );
            self.nft(&desired.render(None)).await?;
        }
        self.applied = Some(desired);
        Ok(true)
    }

    /// Lets node ports answer on 127.0.0.1 (DNAT of loopback traffic needs it).
    pub async fn enable_route_localnet(&self) -> Result<()> {
        self.commands.enable_route_localnet().await
    }

    /// The commands this applier runs with.
    pub fn commands(&self) -> &Commands {
        &self.commands
    }

    /// Whether nftables works here: `nft` is installed and the kernel accepts a table
    /// (created and deleted at once).
    pub async fn nftables_works(&self) -> Result<()> {
        self.nft("add table ip krust-proxy-probe\ndelete table ip krust-proxy-probe\n")
            .await
    }

    /// Removes the proxy's table (nothing if it is not there).
    pub async fn remove_table(&mut self) -> Result<()> {
        self.applied = None;
        self.nft(&format!("add table {TABLE}\ndelete table {TABLE}\n"))
            .await
    }

    async fn nft(&self, script: &str) -> Result<()> {
        self.commands
            .output(&["nft", "-f", "-"], Some(script))
            .await
            .map(drop)
    }
}
