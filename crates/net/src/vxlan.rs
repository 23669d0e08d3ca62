//! The VXLAN overlay (as flannel's vxlan backend): one device per node, VNI 1 on UDP
//! 8472, carrying the `.0` address of the node's pod CIDR. Each other node is a
//! permanent neighbour entry (its `.0` address at its device's MAC) and a forwarding
//! entry (that MAC lives behind the node's InternalIP).
//!
//! A node's device MAC is derived from its InternalIP ([`mac_for`]), so every node
//! knows every other node's MAC from the Node objects alone: nothing extra is
//! published.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use anyhow::Result;
use krust_api::cidr::Ipv4Cidr;

use crate::command;
use crate::peers::Peer;

/// The overlay device.
pub const DEVICE: &str = "krust-vxlan";
/// The VXLAN network identifier.
const VNI: &str = "1";
/// The UDP port (the Linux and flannel default).
const PORT: &str = "8472";
/// What VXLAN adds to every packet (outer IPv4, UDP, VXLAN and Ethernet headers).
pub const OVERHEAD: u32 = 50;

/// The overlay MAC of the node with InternalIP `ip`: locally administered, unicast.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:4b:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Keeps the overlay device and its peer entries in line with the cluster.
#[derive(Debug, Default)]
pub struct Overlay {
    /// The peers whose entries were written (to remove them when they go).
    written: BTreeSet<Peer>,
    device_ready: bool,
}

impl Overlay {
    /// Creates (or adopts) the device for this node, then writes an entry per peer
    /// and removes those of peers that went.
    pub async fn sync(
        &mut self,
        node_ip: Ipv4Addr,
        own_cidr: Ipv4Cidr,
        underlay_mtu: u32,
        peers: &[Peer],
    ) -> Result<()> {
        if !self.device_ready {
            ensure_device(node_ip, own_cidr, underlay_mtu).await?;
            self.device_ready = true;
        }
        let wanted: BTreeSet<Peer> = peers.iter().cloned().collect();
        for gone in self.written.difference(&wanted) {
            let mac = mac_for(gone.ip);
            let vtep = gone.pod_cidr.network().to_string();
            command::run_quietly("ip", &["neigh", "del", &vtep, "dev", DEVICE]);
            command::run_quietly("bridge", &["fdb", "del", &mac, "dev", DEVICE]);
        }
        for peer in wanted.difference(&self.written) {
            let mac = mac_for(peer.ip);
            let vtep = peer.pod_cidr.network().to_string();
            let peer_ip = peer.ip.to_string();
            command::run(
                "ip",
                &[
                    "neigh",
                    "replace",
                    &vtep,
                    "lladdr",
                    &mac,
                    "dev",
                    DEVICE,
                    "nud",
                    "permanent",
                ],
            )
            .await?;
            command::run(
                "bridge",
                &["fdb", "replace", &mac, "dev", DEVICE, "dst", &peer_ip],
            )
            .await?;
        }
        self.written = wanted;
        Ok(())
    }
}

/// Creates the device when it is missing (or was made for another address) and sets
/// its MAC, MTU and address.
async fn ensure_device(node_ip: Ipv4Addr, own_cidr: Ipv4Cidr, underlay_mtu: u32) -> Result<()> {
    let local = node_ip.to_string();
    let existing = command::run("ip", &["-d", "link", "show", DEVICE]).await;
    let matches = existing
        .as_ref()
        .is_ok_and(|details| details.contains(&format!("local {local} ")));
    if existing.is_ok() && !matches {
        command::run("ip", &["link", "del", DEVICE]).await?;
    }
    if !matches {
        command::run(
            "ip",
            &[
                "link",
                "add",
                DEVICE,
                "type",
                "vxlan",
                "id",
                VNI,
                "local",
                &local,
                "dstport",
                PORT,
                "nolearning",
            ],
        )
        .await?;
    }
    let mtu = underlay_mtu.saturating_sub(OVERHEAD).to_string();
    let mac = mac_for(node_ip);
    command::run(
        "ip",
        &["link", "set", DEVICE, "address", &mac, "mtu", &mtu, "up"],
    )
    .await?;
    let address = format!("{}/32", own_cidr.network());
    command::run("ip", &["addr", "replace", &address, "dev", DEVICE]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_come_from_the_node_address() {
        assert_eq!(mac_for(Ipv4Addr::new(198, 18, 0, 11)), "02:4b:c6:12:00:0b");
    }
}
