//! Running the host's network tools (`ip`, `bridge`, `nft`) with errors that say which
//! command failed and what it printed.

use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

/// Runs `program args...` and returns its standard output.
pub async fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {program}: is it installed?"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Like [`run`], but an error whose message contains one of `tolerated` (such as
/// "File exists" for something already there) counts as success.
pub async fn run_tolerating(program: &str, args: &[&str], tolerated: &[&str]) -> Result<()> {
    match run(program, args).await {
        Ok(_) => Ok(()),
        Err(error) if tolerated.iter().any(|t| error.to_string().contains(t)) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Feeds `script` to `nft -f -`: one atomic transaction.
pub async fn nft(script: &str) -> Result<()> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft: is the nftables package installed?")?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(script.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "nft rejected the rules: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command synchronously, ignoring failures: for cleanup on the way out.
pub fn run_quietly(program: &str, args: &[&str]) {
    let _ = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Deletes the nftables table `ip <table>` if it is there; for cleanup on the way out.
pub fn delete_table_quietly(table: &str) {
    run_quietly("nft", &["delete", "table", "ip", table]);
}

/// Checks `script` with `nft -c -f -` (parsed and validated by the kernel, nothing
/// applied): for tests of rendered rules.
pub fn nft_check(script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft: is the nftables package installed?")?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "nft rejected the script: {}\n{script}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
