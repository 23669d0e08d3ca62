//! `krust-bench network`: the service proxy's rule sync, in each mode (nftables, then
//! iptables). 1,000 Services × 10 endpoints are computed into the mode's rules and
//! applied into a scratch network namespace (the full sync), then one endpoint of one
//! Service changes and the difference is computed and applied (what one EndpointSlice
//! change costs).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use krust_proxy::apply::{Applier, Commands};
use krust_proxy::compute::{NodeContext, ruleset, service_ports};
use krust_proxy::iptables;
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

/// The addresses of Service `index`'s endpoints (`generation` shifts them all).
fn addresses(index: usize, endpoints: usize, generation: usize) -> Vec<String> {
    (0..endpoints)
        .map(|e| {
            let n = index * endpoints + e + generation;
            format!("10.42.{}.{}", n / 250 % 250, n % 250 + 1)
        })
        .collect()
}

fn slice(index: usize, addresses: &[String]) -> EndpointSlice {
    let endpoints: Vec<serde_json::Value> = addresses
        .iter()
        .enumerate()
        .map(|(e, address)| {
            json!({"addresses": [address],
                   "conditions": {"ready": true, "serving": true, "terminating": false},
                   "nodeName": format!("node-{}", e % 3)})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{index}-x"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{index}")}},
        "addressType": "IPv4",
        "endpoints": endpoints,
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

/// The rules of one proxy mode and their applier.
enum Rules {
    Nftables(Applier),
    Iptables(iptables::Applier),
}

impl Rules {
    fn mode(&self) -> &'static str {
        match self {
            Rules::Nftables(_) => "nftables, one nft -f",
            Rules::Iptables(_) => "iptables, one iptables-restore --noflush",
        }
    }

    /// Computes the rules (the time it took) and applies them (whether they changed).
    async fn sync(
        &mut self,
        services: &[Service],
        slices: &[EndpointSlice],
        node: &NodeContext,
    ) -> Result<(Duration, bool)> {
        let started = Instant::now();
        let ports = service_ports(services, slices, node);
        match self {
            Rules::Nftables(applier) => {
                let desired = ruleset(&ports, node);
                let computed = started.elapsed();
                Ok((computed, applier.apply(desired).await?))
            }
            Rules::Iptables(applier) => {
                let desired = iptables::tables(&ports, node);
                let computed = started.elapsed();
                Ok((computed, applier.apply(desired).await?))
            }
        }
    }
}

pub async fn run(services: usize, endpoints: usize) -> Result<()> {
    for iptables in [false, true] {
        let netns = Netns(format!("krust-bench-{}", std::process::id()));
        let status = std::process::Command::new("ip")
            .args(["netns", "add", &netns.0])
            .status()
            .context("cannot run ip netns add (needs root)")?;
        anyhow::ensure!(status.success(), "ip netns add {} failed", netns.0);
        let rules = if iptables {
            Rules::Iptables(iptables::Applier::new(Commands::in_network_namespace(
                &netns.0,
            )?))
        } else {
            Rules::Nftables(Applier::in_network_namespace(&netns.0)?)
        };
        run_mode(rules, services, endpoints).await?;
    }
    Ok(())
}

async fn run_mode(mut rules: Rules, services: usize, endpoints: usize) -> Result<()> {
    let node = NodeContext {
        node_name: "node-0".into(),
        cluster_cidr: Some("10.42.0.0/16".parse().map_err(anyhow::Error::msg)?),
        node_ip: None,
        node_port_cidrs: Vec::new(),
    };
    let all_services: Vec<Service> = (0..services).map(service).collect();
    let mut slices: Vec<EndpointSlice> = (0..services)
        .map(|i| slice(i, &addresses(i, endpoints, 0)))
        .collect();

    let started = Instant::now();
    let (computed, _) = rules.sync(&all_services, &slices, &node).await?;
    let full = started.elapsed();
    println!(
        "service proxy rule sync, {services} Services x {endpoints} endpoints ({}, in a scratch netns):",
        rules.mode()
    );
    println!(
        "  full sync: {:.0} ms (compute {:.0} ms, render + apply the rest)",
        ms(full),
        ms(computed)
    );

    // One endpoint of one Service replaced by a new address (the target's case).
    let mut one = Rounds::default();
    for round in 1..=ROUNDS {
        let index = round % services;
        let mut changed = addresses(index, endpoints, 0);
        changed[0] = format!("10.41.{}.{}", round / 250, round % 250 + 1);
        slices[index] = slice(index, &changed);
        one.sync(&mut rules, &all_services, &slices, &node).await?;
        slices[index] = slice(index, &addresses(index, endpoints, 0));
        rules.sync(&all_services, &slices, &node).await?;
    }
    one.report("one endpoint replaced");
    // Every endpoint of one Service replaced.
    let mut all = Rounds::default();
    for round in 1..=ROUNDS {
        let index = round % services;
        slices[index] = slice(index, &addresses(index, endpoints, 1000 + round));
        all.sync(&mut rules, &all_services, &slices, &node).await?;
    }
    all.report(&format!(
        "all {endpoints} endpoints of one Service replaced"
    ));
    Ok(())
}

const ROUNDS: usize = 20;

/// The times of the syncs after one change each: whole (compute + diff + apply) and
/// the computation alone.
#[derive(Default)]
struct Rounds {
    whole: Vec<Duration>,
    compute: Vec<Duration>,
}

impl Rounds {
    async fn sync(
        &mut self,
        rules: &mut Rules,
        services: &[Service],
        slices: &[EndpointSlice],
        node: &NodeContext,
    ) -> Result<()> {
        let started = Instant::now();
        let (computed, changed) = rules.sync(services, slices, node).await?;
        self.compute.push(computed);
        anyhow::ensure!(changed, "the change changed no rule");
        self.whole.push(started.elapsed());
        Ok(())
    }

    fn report(&mut self, what: &str) {
        self.whole.sort();
        self.compute.sort();
        let median = |times: &[Duration]| ms(times[times.len() / 2]);
        println!(
            "  {what}: median {:.1} ms, worst {:.1} ms of {} (compute + diff + apply; compute alone: median {:.1} ms)",
            median(&self.whole),
            ms(*self.whole.last().unwrap_or(&Duration::ZERO)),
            self.whole.len(),
            median(&self.compute)
        );
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
