//! What muster asks of the host it runs on: its name (the default gossip name and log
//! hostname), the address to advertise when gossip binds to every interface, and the networks
//! of its interfaces (whom the load balancer trusts by default).

/// The host name, as the kernel holds it for this UTS namespace (a container's own name).
///
/// Read from `/proc/sys/kernel/hostname`: std's `hostname()` is not stable yet, and this needs
/// no `unsafe`.
pub fn name() -> std::io::Result<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(raw.trim_end_matches('\n').to_owned())
}

/// The first IPv4 address of an interface that is up and not loopback.
pub fn first_ipv4() -> Option<std::net::Ipv4Addr> {
    ipv4_where(|_| true)
}

/// The first IPv4 address of an interface that is up, not loopback, and inside `net` (a
/// Swarm task's overlay, beside docker_gwbridge and maybe ingress).
pub fn ipv4_in(net: &crate::config::networks::Network) -> Option<std::net::Ipv4Addr> {
    ipv4_where(|ip| net.contains(ip.into()))
}

/// The first IPv4 address of an interface that is up and not loopback for which `keep` holds.
fn ipv4_where(keep: impl Fn(std::net::Ipv4Addr) -> bool) -> Option<std::net::Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free with freeifaddrs; std has
    // no interface listing.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
            let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
            if up
                && !loopback
                && !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if keep(ip) {
                    found = Some(ip);
                    break;
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

/// The networks of this host's interfaces that are up (address and netmask, IPv4 and IPv6),
/// loopback's only when `loopback` is set.
pub fn networks(loopback: bool) -> Vec<crate::config::networks::Network> {
    use crate::config::networks::Network;
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free with freeifaddrs; each
    // address and netmask is read as the sockaddr type its family says.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
            let is_lo = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
            if !up || (is_lo && !loopback) || ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
                continue;
            }
            let net = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                    Network {
                        addr: std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                        prefix: u32::from_be(m.sin_addr.s_addr).count_ones() as u8,
                    }
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in6);
                    Network {
                        addr: std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into(),
                        prefix: u128::from_be_bytes(m.sin6_addr.s6_addr).count_ones() as u8,
                    }
                }
                _ => continue,
            };
            if !out.contains(&net) {
                out.push(net);
            }
        }
        libc::freeifaddrs(list);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn interface_networks_hold_the_interfaces_own_addresses() {
        let with_lo = super::networks(true);
        assert!(
            with_lo.iter().any(|n| n.contains([127, 0, 0, 1].into())),
            "{with_lo:?}"
        );
        let without = super::networks(false);
        assert!(!without.iter().any(|n| n.contains([127, 0, 0, 1].into())));
        if let Some(ip) = super::first_ipv4() {
            assert!(without.iter().any(|n| n.contains(ip.into())));
            // The address is found again by its network, and no other network holds one.
            for net in &without {
                if net.contains(ip.into()) {
                    let got = super::ipv4_in(net).expect("an address in its own network");
                    assert!(net.contains(got.into()), "{got} in {net}");
                }
            }
            let nowhere = crate::config::networks::Network::parse("0.0.0.0/32").unwrap();
            assert_eq!(super::ipv4_in(&nowhere), None);
        }
    }

    #[test]
    fn the_host_name_is_what_uname_reports() {
        let name = super::name().expect("host name");
        let uname = std::process::Command::new("uname")
            .arg("-n")
            .output()
            .expect("uname -n runs");
        assert_eq!(name, String::from_utf8_lossy(&uname.stdout).trim_end());
        assert!(!name.is_empty() && !name.contains('\n'));
    }
}
