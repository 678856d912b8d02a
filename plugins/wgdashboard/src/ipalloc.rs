//! The free addresses of a configuration's networks, for addPeers ("the
//! first free address") and getAvailableIPs. Pure, unit-tested natively.
//!
//! A host address is free when it is inside one of the interface's IPv4
//! networks, is not the interface's own address, is not the network or
//! broadcast address (except in a /31), and is not covered by any peer's
//! allowed IPs, restricted peers included (their addresses stay reserved
//! until they are deleted). IPv6 networks are not enumerated: the original
//! does not allocate from them either.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use crate::validate::{Cidr, v4_mask};

/// At most this many addresses of one network are looked at, so that a /8
/// full of peers cannot make one request scan sixteen million addresses.
const SCAN_LIMIT: u32 = 1 << 20;

/// Up to `limit` free addresses as "a.b.c.d/32", in network order.
pub fn available(networks: &[Cidr], used: &[Cidr], limit: usize) -> Vec<String> {
    let mut used_hosts: HashSet<u32> = HashSet::new();
    let mut used_nets: Vec<Cidr> = Vec::new();
    for n in networks {
        if let IpAddr::V4(a) = n.addr {
            used_hosts.insert(u32::from(a));
        }
    }
    for u in used {
        match u.addr {
            IpAddr::V4(a) if u.prefix == 32 => {
                used_hosts.insert(u32::from(a));
            }
            IpAddr::V4(_) => used_nets.push(*u),
            IpAddr::V6(_) => {}
        }
    }
    let mut out = Vec::new();
    for net in networks {
        let IpAddr::V4(addr) = net.addr else { continue };
        if net.prefix > 31 {
            continue;
        }
        let mask = v4_mask(net.prefix);
        let base = u32::from(addr) & mask;
        let size: u64 = 1u64 << (32 - u32::from(net.prefix));
        let (first, count) = if net.prefix == 31 {
            (0u64, 2u64)
        } else {
            (1u64, size - 2)
        };
        for i in first..first + count.min(u64::from(SCAN_LIMIT)) {
            if out.len() >= limit {
                return out;
            }
            let ip = base.wrapping_add(i as u32);
            if used_hosts.contains(&ip) {
                continue;
            }
            let ip4 = Ipv4Addr::from(ip);
            if used_nets.iter().any(|n| n.contains(IpAddr::V4(ip4))) {
                continue;
            }
            out.push(format!("{ip4}/32"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(items: &[&str]) -> Vec<Cidr> {
        items.iter().map(|i| Cidr::parse(i).unwrap()).collect()
    }

    #[test]
    fn the_first_free_address_skips_the_interface_and_used_ones() {
        let nets = cidrs(&["10.0.0.1/24"]);
        assert_eq!(available(&nets, &[], 2), ["10.0.0.2/32", "10.0.0.3/32"]);
        let used = cidrs(&["10.0.0.2/32", "10.0.0.4/31"]);
        assert_eq!(
            available(&nets, &used, 3),
            ["10.0.0.3/32", "10.0.0.6/32", "10.0.0.7/32"]
        );
    }

    #[test]
    fn network_and_broadcast_are_never_given_out() {
        let nets = cidrs(&["192.168.5.1/30"]);
        assert_eq!(available(&nets, &[], 10), ["192.168.5.2/32"]);
        assert_eq!(
            available(&cidrs(&["10.1.1.1/32"]), &[], 10),
            Vec::<String>::new()
        );
        assert_eq!(
            available(&cidrs(&["10.1.1.0/31"]), &[], 10),
            ["10.1.1.1/32"]
        );
    }

    #[test]
    fn a_full_network_has_nothing_and_ipv6_is_not_enumerated() {
        let nets = cidrs(&["10.0.0.1/29", "fd00::1/64"]);
        let used = cidrs(&["10.0.0.0/29"]);
        assert!(available(&nets, &used, 10).is_empty());
        assert_eq!(available(&nets, &[], 100).len(), 5);
    }

    #[test]
    fn a_large_network_answers_quickly() {
        let nets = cidrs(&["10.0.0.1/8"]);
        assert_eq!(available(&nets, &[], 1000).len(), 1000);
    }
}
