//! IP networks in CIDR notation (`192.168.42.0/24`, `fd00::/8`, or one address), as
//! `[haproxy] trusted_networks` lists them: the addresses a member may have to become a
//! server.

use std::net::IpAddr;

/// One network: an address and how many of its leading bits are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The network's address (bits past the prefix are ignored).
    pub addr: IpAddr,
    /// Leading bits that are fixed: 0 to 32 for IPv4, 0 to 128 for IPv6.
    pub prefix: u8,
}

impl Network {
    /// Reads `ADDR/PREFIX` or a single address.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or ADDRESS/PREFIX"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{text:?}: the prefix must be 0 to {max}")),
            },
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(net: &str, ip: &str, inside: bool) {
        let n = Network::parse(net).expect(net);
        assert_eq!(n.contains(ip.parse().unwrap()), inside, "{net} {ip}");
    }

    #[test]
    fn networks_hold_their_addresses_only() {
        check("192.168.42.0/24", "192.168.42.7", true);
        check("192.168.42.0/24", "192.168.43.7", false);
        check("192.168.42.9/24", "192.168.42.200", true);
        check("10.0.0.0/8", "10.255.1.1", true);
        check("0.0.0.0/0", "203.0.113.5", true);
        check("127.0.0.1", "127.0.0.1", true);
        check("127.0.0.1", "127.0.0.2", false);
        check("fd00::/8", "fd12::1", true);
        check("fd00::/8", "fe80::1", false);
        check("::/0", "2001:db8::1", true);
        check("10.0.0.0/8", "::ffff:10.1.2.3", true);
        check("10.0.0.0/8", "fd00::1", false);
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "nope",
            "10.0.0/8",
            "10.0.0.0/x",
            "",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Network::parse("10.1.0.0/16").unwrap().to_string(),
            "10.1.0.0/16"
        );
    }
}
