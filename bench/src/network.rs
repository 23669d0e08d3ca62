//! `krust-bench network`: the service proxy's rule sync. 1,000 Services × 10
//! endpoints are computed into the nftables ruleset and applied into a scratch
//! network namespace (the full sync), then one endpoint of one Service changes and
//! the difference is computed and applied (what one EndpointSlice change costs).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use krust_proxy::{NodeContext, apply::Applier, compute};
use serde_json::json;

fn service(index: usize) -> Service {
    let ip = format!("10.43.{}.{}", index / 250, index % 250 + 1);
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{index}"), "namespace": "bench"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    }))
    .expect("a valid Service")
}

fn slice(index: usize, endpoints: usize, generation: usize) -> EndpointSlice {
    let addresses: Vec<serde_json::Value> = (0..endpoints)
        .map(|e| {
            let n = index * endpoints + e + generation;
            json!({"addresses": [format!("10.42.{}.{}", n / 250 % 250, n % 250 + 1)],
                   "conditions": {"ready": true, "serving": true, "terminating": false},
                   "nodeName": format!("node-{}", e % 3)})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{index}-x"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{index}")}},
        "addressType": "IPv4",
        "endpoints": addresses,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("a valid EndpointSlice")
}

/// Removes the scratch namespace on the way out.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

pub async fn run(services: usize, endpoints: usize) -> Result<()> {
    let netns = Netns(format!("krust-bench-{}", std::process::id()));
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &netns.0])
        .status()
        .context("cannot run ip netns add (needs root)")?;
    anyhow::ensure!(status.success(), "ip netns add {} failed", netns.0);
    let node = NodeContext {
        node_name: "node-0".into(),
        cluster_cidr: Some("10.42.0.0/16".parse().map_err(anyhow::Error::msg)?),
    };
    let all_services: Vec<Service> = (0..services).map(service).collect();
    let mut slices: Vec<EndpointSlice> = (0..services).map(|i| slice(i, endpoints, 0)).collect();
    let mut applier = Applier::new(vec![
        "ip".into(),
        "netns".into(),
        "exec".into(),
        netns.0.clone(),
    ]);

    let started = Instant::now();
    let desired = compute(&all_services, &slices, &node);
    let computed = started.elapsed();
    applier.apply(desired).await?;
    let full = started.elapsed();

    let mut changes = Vec::new();
    for round in 1..=20 {
        slices[round % services] = slice(round % services, endpoints, 1000 + round);
        let started = Instant::now();
        let desired = compute(&all_services, &slices, &node);
        applier.apply(desired).await?;
        changes.push(started.elapsed());
    }
    changes.sort();
    let median = changes[changes.len() / 2];
    let worst = *changes.last().unwrap_or(&Duration::ZERO);
    println!(
        "service proxy rule sync, {services} Services x {endpoints} endpoints (nftables, one netns):"
    );
    println!(
        "  full sync: {:.0} ms (compute {:.0} ms, render + nft -f the rest)",
        ms(full),
        ms(computed)
    );
    println!(
        "  one endpoint changed: median {:.1} ms, worst {:.1} ms of {} changes (compute + diff + nft -f)",
        ms(median),
        ms(worst),
        changes.len()
    );
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
