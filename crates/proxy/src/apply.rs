//! Applying a [`Ruleset`] to the kernel: one `nft -f -` transaction per change,
//! rendering only the difference from what the last successful apply left.

use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

use crate::ruleset::{Ruleset, TABLE};

/// Runs `nft` (and `sysctl`) for the proxy, optionally behind a command prefix such as
/// `ip netns exec <ns>` (how tests aim the rules at a network namespace).
#[derive(Debug, Default)]
pub struct Applier {
    prefix: Vec<String>,
    applied: Option<Ruleset>,
}

impl Applier {
    /// An applier running its commands after `prefix` (empty: directly).
    pub fn new(prefix: Vec<String>) -> Applier {
        Applier {
            prefix,
            applied: None,
        }
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
        self.run(
            &["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"],
            None,
        )
        .await
    }

    /// Removes the proxy's table (nothing if it is not there).
    pub async fn remove_table(&mut self) -> Result<()> {
        self.applied = None;
        self.nft(&format!("add table {TABLE}\ndelete table {TABLE}\n"))
            .await
    }

    async fn nft(&self, script: &str) -> Result<()> {
        self.run(&["nft", "-f", "-"], Some(script)).await
    }

    async fn run(&self, command: &[&str], stdin: Option<&str>) -> Result<()> {
        let mut argv: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        argv.extend_from_slice(command);
        let mut child = tokio::process::Command::new(argv[0])
            .args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {:?}: is nftables installed?", argv.join(" ")))?;
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
        Ok(())
    }
}
