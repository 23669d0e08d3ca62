//! ImageLocality: a node that already has the pod's images scores higher, the more so
//! the bigger the images and the fewer nodes have them (upstream's thresholds).

use super::{Cycle, MAX_NODE_SCORE};
use crate::cache::NodeInfo;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Image names as nodes report them: `busybox` is `docker.io/library/busybox:latest`.
pub fn normalized_image_name(name: &str) -> String {
    let has_tag = name
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':') || last.contains('@'));
    let name = if has_tag {
        name.to_string()
    } else {
        format!("{name}:latest")
    };
    let first = name.split('/').next().unwrap_or("");
    if !name.contains('/') {
        format!("docker.io/library/{name}")
    } else if !(first.contains('.') || first.contains(':') || first == "localhost") {
        format!("docker.io/{name}")
    } else {
        name
    }
}

pub fn score(cycle: &Cycle, node: &NodeInfo) -> i64 {
    let Some(n) = node.node.as_ref() else {
        return 0;
    };
    let images = n
        .status
        .as_ref()
        .and_then(|s| s.images.as_deref())
        .unwrap_or_default();
    let spec = cycle.pod.pod.spec.as_ref();
    let containers: Vec<_> = spec
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .collect()
        })
        .unwrap_or_default();
    if images.is_empty() || containers.is_empty() {
        return 0;
    }
    let total_nodes = cycle.cluster.node_count().max(1) as f64;
    let mut sum = 0i64;
    for container in &containers {
        let Some(wanted) = container.image.as_deref().map(normalized_image_name) else {
            continue;
        };
        let found = images.iter().find(|image| {
            image
                .names
                .iter()
                .flatten()
                .any(|name| normalized_image_name(name) == wanted)
        });
        if let Some(image) = found {
            let spread = *cycle.cluster.image_nodes.get(&wanted).unwrap_or(&1) as f64 / total_nodes;
            sum += (image.size_bytes.unwrap_or(0) as f64 * spread.min(1.0)) as i64;
        }
    }
    let max = MAX_CONTAINER_THRESHOLD * containers.len() as i64;
    let clamped = sum.clamp(MIN_THRESHOLD, max);
    MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ClusterCache;
    use crate::cache::tests::{node, pod};
    use crate::plugins::Cycle;
    use serde_json::json;

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            normalized_image_name("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalized_image_name("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalized_image_name("127.0.0.1:5000/app"),
            "127.0.0.1:5000/app:latest"
        );
    }

    #[test]
    fn nodes_with_big_images_score_higher() {
        let mut cluster = ClusterCache::default();
        let with = node(
            "a",
            "1",
            json!({"status": {"images": [
            {"names": ["docker.io/library/big:1"], "sizeBytes": 600 * MB}]}}),
        );
        cluster.upsert_node(with);
        cluster.upsert_node(node("b", "1", json!({})));
        let p = pod(
            "p",
            "0",
            json!({"spec": {"containers": [{"name": "c", "image": "big:1"}]}}),
        );
        let cycle = Cycle::new(&p, &cluster);
        let a = score(&cycle, cluster.node("a").unwrap());
        let b = score(&cycle, cluster.node("b").unwrap());
        // 600 MB spread over half the nodes: 300 MB, between the 23 MB and 1000 MB thresholds.
        assert_eq!(a, 100 * (300 - 23) / (1000 - 23));
        assert_eq!(b, 0);
    }
}
