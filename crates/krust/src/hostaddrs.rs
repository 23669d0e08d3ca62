//! The IP addresses of this host's network interfaces, for the serving certificate.
//!
//! Read from `ip -j addr show` (iproute2) and, where that is not available, from
//! `/proc/net/if_inet6` and `/proc/net/fib_trie`. Link-local, multicast and unspecified
//! addresses are left out: clients do not reach an API server through them, and
//! link-local addresses come and go with every veth. Failing to read the addresses
//! is not fatal: the certificate then covers the fixed names only.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

/// The usable addresses of this host's interfaces, sorted and without duplicates.
pub fn interface_addresses() -> BTreeSet<IpAddr> {
    let addresses = match addresses_from_ip_command() {
        Ok(addresses) => addresses,
        Err(reason) => {
            tracing::debug!(
                "cannot list addresses with `ip -j addr show` ({reason}); reading /proc"
            );
            addresses_from_proc()
        }
    };
    addresses.into_iter().filter(is_usable).collect()
}

fn is_usable(address: &IpAddr) -> bool {
    if address.is_unspecified() || address.is_multicast() {
        return false;
    }
    match address {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_broadcast(),
        // fe80::/10
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

fn addresses_from_ip_command() -> Result<Vec<IpAddr>, String> {
    let output = Command::new("ip")
        .args(["-j", "addr", "show"])
        .output()
        .map_err(|err| err.to_string())?;
    if !output.status.success() {
        return Err(format!("exit status {}", output.status));
    }
    parse_ip_json(&output.stdout)
}

/// Parses `ip -j addr show`: `[{"ifname": .., "addr_info": [{"local": "10.0.0.1"}, ..]}, ..]`.
fn parse_ip_json(json: &[u8]) -> Result<Vec<IpAddr>, String> {
    let interfaces: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let interfaces = interfaces
        .as_array()
        .ok_or("expected a JSON array of interfaces")?;
    let mut addresses = Vec::new();
    for interface in interfaces {
        let Some(infos) = interface.get("addr_info").and_then(|v| v.as_array()) else {
            continue;
        };
        for info in infos {
            if let Some(address) = info
                .get("local")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse().ok())
            {
                addresses.push(address);
            }
        }
    }
    Ok(addresses)
}

fn addresses_from_proc() -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
        addresses.extend(parse_fib_trie(&text));
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
        addresses.extend(parse_if_inet6(&text));
    }
    addresses
}

/// IPv4 addresses of this host: in `/proc/net/fib_trie`, each `|-- A.B.C.D` leaf followed
/// by a `/32 host LOCAL` line is a local address.
fn parse_fib_trie(text: &str) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    let mut last_leaf: Option<IpAddr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(leaf) = line.strip_prefix("|-- ") {
            last_leaf = leaf.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(address) = last_leaf
        {
            addresses.push(address);
        }
    }
    addresses
}

/// IPv6 addresses from `/proc/net/if_inet6`: the first column is the address as 32 hex digits.
fn parse_if_inet6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(|bits| IpAddr::V6(bits.into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let json = br#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1"},{"family":"inet6","local":"::1"}]},
            {"ifname":"ifb0","addr_info":[]},{"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.2"},{"family":"inet6","local":"fe80::1"}]},
            {"ifname":"odd"}]"#;
        let addresses = parse_ip_json(json).unwrap();
        let expected: Vec<IpAddr> = ["127.0.0.1", "::1", "192.0.2.2", "fe80::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(addresses, expected);
        assert!(parse_ip_json(b"{}").is_err());
    }

    #[test]
    fn parses_proc_files() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n        |-- 127.255.255.255\n           /32 link BROADCAST\n           |-- 192.0.2.2\n              /32 host LOCAL\n";
        let expected: Vec<IpAddr> =
            vec!["127.0.0.1".parse().unwrap(), "192.0.2.2".parse().unwrap()];
        assert_eq!(parse_fib_trie(fib), expected);

        let inet6 = "fd000000000000000000000000000002 04 40 00 82     eth0\n00000000000000000000000000000001 01 80 10 80       lo\n";
        let expected: Vec<IpAddr> = vec!["fd00::2".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(parse_if_inet6(inet6), expected);
    }

    #[test]
    fn leaves_out_link_local_and_unspecified() {
        for bad in [
            "fe80::1",
            "169.254.1.1",
            "0.0.0.0",
            "::",
            "ff02::1",
            "224.0.0.1",
        ] {
            assert!(!is_usable(&bad.parse().unwrap()), "{bad}");
        }
        for good in ["127.0.0.1", "::1", "10.0.0.1", "fd00::2", "2001:db8::1"] {
            assert!(is_usable(&good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn this_host_has_loopback() {
        let addresses = interface_addresses();
        assert!(
            addresses.contains(&"127.0.0.1".parse().unwrap()),
            "{addresses:?}"
        );
    }
}
