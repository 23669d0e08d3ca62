//! Forwarding of pod traffic where the host's iptables `FORWARD` policy is DROP (as
//! Docker sets it): a chain of the node's own in the `filter` table accepts what
//! comes from or goes to the cluster CIDR, jumped to from the end of `FORWARD`, so
//! that the rules before it (the service proxy's rejects, the host's own) still see
//! the traffic first. NetworkPolicy is unaffected: it drops in a base chain of its
//! own, which an accept here cannot override. Where iptables is not installed there
//! is no such policy to work around, and nothing is done.

use anyhow::Result;
use krust_api::cidr::Ipv4Cidr;

use crate::command;

/// The comment every rule of the chain and its jump carry.
const COMMENT: &str = "krust pod network";

/// The chain of the node whose pods are on `bridge` (at most 25 characters:
/// iptables allows 28).
pub fn chain(bridge: &str) -> String {
    format!("KRUST-FWD-{bridge}")
}

/// The rules the chain holds, and the jump to it: (chain, rule arguments).
fn rules(bridge: &str, cluster_cidr: Ipv4Cidr) -> Vec<(String, Vec<String>)> {
    let chain = chain(bridge);
    let cidr = cluster_cidr.to_string();
    let accept = |direction: &str| {
        [
            direction,
            &cidr,
            "-m",
            "comment",
            "--comment",
            COMMENT,
            "-j",
            "ACCEPT",
        ]
        .map(String::from)
        .to_vec()
    };
    vec![
        (chain.clone(), accept("-s")),
        (chain.clone(), accept("-d")),
        (
            "FORWARD".into(),
            ["-m", "comment", "--comment", COMMENT, "-j", &chain]
                .map(String::from)
                .to_vec(),
        ),
    ]
}

/// Makes the chain and its jump (each rule added once: a restarted agent finds
/// them in place).
pub async fn install(bridge: &str, cluster_cidr: Ipv4Cidr) -> Result<()> {
    command::run_tolerating(
        "iptables",
        &["-w", "-N", &chain(bridge)],
        &["already exists"],
    )
    .await?;
    for (chain, rule) in rules(bridge, cluster_cidr) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        let check = [&["-w", "-C", chain.as_str()][..], &rule].concat();
        if command::run("iptables", &check).await.is_ok() {
            continue;
        }
        command::run(
            "iptables",
            &[&["-w", "-A", chain.as_str()][..], &rule].concat(),
        )
        .await?;
    }
    Ok(())
}

/// Removes the jump and the chain, if there; for cleanup on the way out.
pub fn remove(bridge: &str) {
    let chain = chain(bridge);
    let jump = ["-m", "comment", "--comment", COMMENT, "-j", &chain];
    command::run_quietly("iptables", &[&["-w", "-D", "FORWARD"][..], &jump].concat());
    command::run_quietly("iptables", &["-w", "-F", &chain]);
    command::run_quietly("iptables", &["-w", "-X", &chain]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_accepts_both_directions_of_the_cluster_cidr_and_is_jumped_to() {
        let rules = rules("krust0", "10.42.0.0/16".parse().unwrap());
        let text: Vec<String> = rules
            .iter()
            .map(|(chain, rule)| format!("{chain} {}", rule.join(" ")))
            .collect();
        assert_eq!(
            text,
            [
                "KRUST-FWD-krust0 -s 10.42.0.0/16 -m comment --comment krust pod network -j ACCEPT",
                "KRUST-FWD-krust0 -d 10.42.0.0/16 -m comment --comment krust pod network -j ACCEPT",
                "FORWARD -m comment --comment krust pod network -j KRUST-FWD-krust0",
            ]
        );
        assert!(chain("abcdefghijklmno").len() <= 28);
    }
}
