//! Node IPAM, as upstream's range allocator (pkg/controller/nodeipam): every node
//! without a pod CIDR gets the next free subnet (a /24 by default) of the cluster
//! CIDR in `spec.podCIDR` and `spec.podCIDRs`. Which subnets are taken is read from
//! the nodes themselves, so a node's subnet is free again as soon as the node is
//! deleted, and nothing needs rebuilding after a restart.
//!
//! The search for a node starts at a subnet derived from its name, so two controller
//! managers looking at the same nodes pick the same subnet for the same node (the
//! write is conditional on the node's resourceVersion, so only one of them lands).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use krust_api::cidr::Ipv4Cidr;
use kube::api::{Api, PostParams};

use crate::cache::{Cache, Caches, Change};
use crate::changes::forward;
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// How long a node waits before looking again when the cluster CIDR is full.
const FULL_RETRY: Duration = Duration::from_secs(30);

/// The subnet for a node named `name`: the first one not in `taken`, searching from
/// a position derived from the name. None when every subnet is taken.
pub fn choose_subnet(
    cluster: Ipv4Cidr,
    prefix: u8,
    name: &str,
    taken: &BTreeSet<String>,
) -> Option<Ipv4Cidr> {
    let count = cluster.subnet_count(prefix);
    if count == 0 {
        return None;
    }
    let start = fnv1a(name) % count;
    (0..count)
        .map(|offset| (start + offset) % count)
        .filter_map(|index| cluster.subnet(prefix, index))
        .find(|subnet| !taken.contains(&subnet.to_string()))
}

/// FNV-1a: a hash that is the same in every process and build.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The pod CIDRs a node holds.
fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let mut cidrs: Vec<String> = spec.pod_cidrs.clone().unwrap_or_default();
    if let Some(cidr) = spec.pod_cidr.as_ref().filter(|c| !c.is_empty())
        && !cidrs.contains(cidr)
    {
        cidrs.push(cidr.clone());
    }
    cidrs
}

struct Controller {
    nodes: Arc<Cache<Node>>,
    client: kube::Client,
    cluster_cidr: Ipv4Cidr,
    prefix: u8,
}

/// Runs the allocator until the process ends.
pub async fn run(caches: Caches, cluster_cidr: Ipv4Cidr, prefix: u8) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        nodes: caches.get(),
        client: caches.client().clone(),
        cluster_cidr,
        prefix,
    });
    let queue: WorkQueue<String> = WorkQueue::new();
    // A node that goes frees its subnet for the nodes still waiting for one.
    let nodes = controller.nodes.clone();
    tokio::spawn(forward(
        controller.nodes.subscribe(),
        queue.clone(),
        move |change: &Change<Node>| match change {
            Change::Applied(node) => node.metadata.name.clone().into_iter().collect(),
            Change::Deleted(_) => nodes
                .filter(|node| pod_cidrs(node).is_empty())
                .iter()
                .filter_map(|node| node.metadata.name.clone())
                .collect(),
        },
    ));
    controller.nodes.wait_synced().await;
    // One worker: two nodes handled at once could be given the same subnet.
    run_workers("nodeipam", queue, 1, |name| {
        let controller = controller.clone();
        async move { controller.sync(&name).await }
    })
    .await;
    Ok(())
}

impl Controller {
    async fn sync(&self, name: &str) -> anyhow::Result<Outcome> {
        let Some(node) = self.nodes.get("", name) else {
            return Ok(Outcome::Done);
        };
        if !pod_cidrs(&node).is_empty() || node.metadata.deletion_timestamp.is_some() {
            return Ok(Outcome::Done);
        }
        let taken: BTreeSet<String> = self
            .nodes
            .list()
            .iter()
            .flat_map(|node| pod_cidrs(node))
            .collect();
        let Some(subnet) = choose_subnet(self.cluster_cidr, self.prefix, name, &taken) else {
            tracing::warn!(
                node = name,
                cluster_cidr = %self.cluster_cidr,
                "no pod CIDR left for the node: the cluster CIDR is full; give --cluster-cidr a larger range"
            );
            return Ok(Outcome::RequeueAfter(FULL_RETRY));
        };
        let mut updated = (*node).clone();
        let spec = updated.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = Some(subnet.to_string());
        spec.pod_cidrs = Some(vec![subnet.to_string()]);
        let api: Api<Node> = Api::all(self.client.clone());
        match api.replace(name, &PostParams::default(), &updated).await {
            Ok(_) => {
                tracing::info!(node = name, pod_cidr = %subnet, "allocated a pod CIDR");
                Ok(Outcome::Done)
            }
            // Changed meanwhile (perhaps given a CIDR elsewhere): the watch brings
            // the new version, which is looked at again.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(Outcome::Done),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_chosen_by_name_and_skip_taken_ones() {
        let cluster: Ipv4Cidr = "10.42.0.0/16".parse().unwrap();
        let first = choose_subnet(cluster, 24, "node-a", &BTreeSet::new()).unwrap();
        assert_eq!(first.prefix(), 24);
        assert!(cluster.contains(first.network()));
        // The same answer for the same name and view.
        assert_eq!(
            choose_subnet(cluster, 24, "node-a", &BTreeSet::new()),
            Some(first)
        );
        let taken = BTreeSet::from([first.to_string()]);
        let second = choose_subnet(cluster, 24, "node-a", &taken).unwrap();
        assert_ne!(second, first);

        // A /30 cluster CIDR has four /32s; all taken, none is left.
        let tiny: Ipv4Cidr = "10.0.0.0/30".parse().unwrap();
        let all: BTreeSet<String> = (0..4)
            .map(|i| tiny.subnet(32, i).unwrap().to_string())
            .collect();
        assert_eq!(choose_subnet(tiny, 32, "n", &all), None);
        assert_eq!(choose_subnet(tiny, 8, "n", &BTreeSet::new()), None);
    }
}
