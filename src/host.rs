//! What muster asks of the host it runs on: its name (the default gossip name and log
//! hostname) and the address to advertise when gossip binds to every interface.

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
                found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

#[cfg(test)]
mod tests {
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
