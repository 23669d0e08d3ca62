//! IPv4 address ranges (`10.43.0.0/16`) and port ranges (`30000-32767`): what the
//! Service ClusterIP and NodePort allocators and node IPAM hand out from.
//!
//! Only IPv4 is supported (krust runs single-stack IPv4 clusters); an IPv6 range is
//! refused with an error that says so.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network, e.g. `10.43.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    network: u32,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network `address/prefix`, with host bits cleared.
    pub fn new(address: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        let prefix = prefix.min(32);
        Ipv4Cidr {
            network: u32::from(address) & mask(prefix),
            prefix,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// How many addresses the network spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix) == self.network
    }

    /// The addresses that can be handed out: all but the network and broadcast
    /// addresses (for networks of four or more addresses), as upstream's allocator.
    pub fn usable(&self) -> (Ipv4Addr, Ipv4Addr) {
        let last = self.network + (self.size() - 1) as u32;
        if self.size() >= 4 {
            (Ipv4Addr::from(self.network + 1), Ipv4Addr::from(last - 1))
        } else {
            (Ipv4Addr::from(self.network), Ipv4Addr::from(last))
        }
    }

    /// The `index`th subnet of length `prefix` (e.g. the 3rd /24 of a /16), if the
    /// network has that many.
    pub fn subnet(&self, prefix: u8, index: u64) -> Option<Ipv4Cidr> {
        if prefix < self.prefix || prefix > 32 || index >= self.subnet_count(prefix) {
            return None;
        }
        let offset = (index << (32 - prefix)) as u32;
        Some(Ipv4Cidr::new(Ipv4Addr::from(self.network + offset), prefix))
    }

    /// How many subnets of length `prefix` the network holds.
    pub fn subnet_count(&self, prefix: u8) -> u64 {
        if prefix < self.prefix || prefix > 32 {
            0
        } else {
            1u64 << (prefix - self.prefix)
        }
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Ipv4Cidr, String> {
        let (address, prefix) = text.split_once('/').ok_or_else(|| {
            format!("{text:?} is not a CIDR: write it as ADDRESS/PREFIX, e.g. 10.43.0.0/16")
        })?;
        if address.contains(':') {
            return Err(format!(
                "{text:?} is an IPv6 range: krust supports IPv4 ranges only"
            ));
        }
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{text:?}: {address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to 32"))?;
        Ok(Ipv4Cidr::new(address, prefix))
    }
}

/// An inclusive range of ports, e.g. `30000-32767` (upstream's `--service-node-port-range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: i64) -> bool {
        port >= i64::from(self.first) && port <= i64::from(self.last)
    }

    pub fn len(&self) -> u32 {
        u32::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<PortRange, String> {
        let invalid =
            || format!("{text:?} is not a port range: write it as FIRST-LAST, e.g. 30000-32767");
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (first.trim(), last.trim()),
            None => (text.trim(), text.trim()),
        };
        let first: u16 = first.parse().map_err(|_| invalid())?;
        let last: u16 = last.parse().map_err(|_| invalid())?;
        if first == 0 || first > last {
            return Err(invalid());
        }
        Ok(PortRange { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_span_their_addresses() {
        let cidr: Ipv4Cidr = "10.43.7.9/16".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.43.0.0/16");
        assert_eq!(cidr.size(), 65536);
        assert!(cidr.contains("10.43.255.1".parse().unwrap()));
        assert!(!cidr.contains("10.44.0.1".parse().unwrap()));
        assert_eq!(
            cidr.usable(),
            (
                "10.43.0.1".parse().unwrap(),
                "10.43.255.254".parse().unwrap()
            )
        );
        assert_eq!(cidr.subnet_count(24), 256);
        assert_eq!(cidr.subnet(24, 3).unwrap().to_string(), "10.43.3.0/24");
        assert!(cidr.subnet(24, 256).is_none());
        assert!(cidr.subnet(8, 0).is_none());
    }

    #[test]
    fn bad_cidrs_are_refused_with_a_reason() {
        assert!(
            "10.43.0.0"
                .parse::<Ipv4Cidr>()
                .unwrap_err()
                .contains("ADDRESS/PREFIX")
        );
        assert!(
            "fd00::/108"
                .parse::<Ipv4Cidr>()
                .unwrap_err()
                .contains("IPv4")
        );
        assert!(
            "10.43.0.0/33"
                .parse::<Ipv4Cidr>()
                .unwrap_err()
                .contains("prefix")
        );
        assert!("10.433.0.0/16".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn port_ranges_parse() {
        let range: PortRange = "30000-32767".parse().unwrap();
        assert_eq!(range.len(), 2768);
        assert!(range.contains(30000) && range.contains(32767));
        assert!(!range.contains(29999) && !range.contains(32768));
        assert_eq!(range.to_string(), "30000-32767");
        assert!("32767-30000".parse::<PortRange>().is_err());
        assert!("abc".parse::<PortRange>().is_err());
        assert_eq!("8080".parse::<PortRange>().unwrap().len(), 1);
    }
}
