//! `krust-bench dns`: queries per second the cluster DNS of a real `krust server`
//! answers over UDP, with the server pinned to one core and the load generator on
//! another. The server holds `services` Services; each query asks for the A record
//! of one of them, round robin, from `clients` sockets that each keep one query in
//! flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Service;
use krust_e2e::{ServerOptions, TestServer};
use kube::api::{Api, PostParams};

/// How long a query may go unanswered before it counts as lost.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// A DNS query (recursion desired) for the A record of `name`, with `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(64);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

/// Whether `answer` answers query `id` with NOERROR and at least one record.
fn answered(answer: &[u8], id: u16) -> bool {
    answer.len() >= 12
        && answer[..2] == id.to_be_bytes()
        && answer[3] & 0x0f == 0
        && u16::from_be_bytes([answer[6], answer[7]]) > 0
}

/// The address the server's cluster DNS listens on, from its log.
fn dns_address(server: &TestServer) -> Option<SocketAddr> {
    let log = server.stderr();
    let line = log.lines().find(|l| l.contains("cluster DNS serving"))?;
    let listen = line.split("listen=").nth(1)?.split_whitespace().next()?;
    listen.parse().ok()
}

/// Pins every thread of process `pid` to CPU `cpu`.
fn pin(pid: u32, cpu: usize) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-cp", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run taskset (util-linux)")?;
    anyhow::ensure!(status.success(), "taskset -a -cp {cpu} {pid} failed");
    Ok(())
}

pub async fn run(services: usize, clients: usize, seconds: u64) -> Result<()> {
    let server = TestServer::start_with(ServerOptions::default());
    let address = dns_address(&server).context("the server logged no cluster DNS address")?;
    let client = server.client().await;
    let api: Api<Service> = Api::namespaced(client, "default");
    for index in 0..services {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("svc-{index}")},
            "spec": {"ports": [{"port": 80}]},
        }))?;
        api.create(&PostParams::default(), &service).await?;
    }
    let names: Arc<Vec<String>> = Arc::new(
        (0..services)
            .map(|i| format!("svc-{i}.default.svc.cluster.local"))
            .collect(),
    );
    // Every Service resolves before the clock starts.
    let probe = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (index, name) in names.iter().enumerate() {
        let id = index as u16;
        loop {
            probe.send_to(&query(id, name), address).await?;
            let mut buffer = [0u8; 512];
            if let Ok(Ok(size)) = tokio::time::timeout(QUERY_TIMEOUT, probe.recv(&mut buffer)).await
                && answered(&buffer[..size], id)
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} does not resolve at {address}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if let Some(pid) = server.pid() {
        pin(pid, 0)?;
    }
    pin(std::process::id(), 1)?;

    let answers = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..clients {
        let (names, answers, lost) = (names.clone(), answers.clone(), lost.clone());
        tasks.spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(address).await?;
            let mut buffer = [0u8; 512];
            let mut sent: u64 = 0;
            while Instant::now() < stop_at {
                let id = (sent as u16).wrapping_mul(31).wrapping_add(worker as u16);
                let name = &names[(sent as usize + worker) % names.len()];
                socket.send(&query(id, name)).await?;
                sent += 1;
                match tokio::time::timeout(QUERY_TIMEOUT, socket.recv(&mut buffer)).await {
                    Ok(Ok(size)) if answered(&buffer[..size], id) => {
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    let started = Instant::now();
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let answers = answers.load(Ordering::Relaxed);
    println!(
        "cluster DNS, {services} Services, {clients} clients for {seconds} s, server on one core:"
    );
    println!(
        "  {:.0} answered queries/s ({answers} answered, {} lost or wrong)",
        answers as f64 / elapsed,
        lost.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_well_formed_and_answers_recognised() {
        let packet = query(7, "a.bc.");
        assert_eq!(
            packet,
            [
                0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1
            ]
        );
        let mut answer = packet.clone();
        answer[2] |= 0x80;
        assert!(!answered(&answer, 7), "no answer records");
        answer[7] = 1;
        assert!(answered(&answer, 7));
        assert!(!answered(&answer, 8), "another query's answer");
        answer[3] |= 3;
        assert!(!answered(&answer, 7), "NXDOMAIN");
    }
}
