//! Strict validation of everything that reaches a device, a kv key or a
//! client's `.conf` text: configuration names (Linux interface names),
//! ports, addresses in CIDR notation, WireGuard keys, DNS servers. Pure
//! functions, unit-tested natively.
//!
//! The original passed these fields to a shell (`wg set ...`, `wg-quick`);
//! here nothing reaches a shell, but the same strictness keeps a stored
//! configuration from carrying text (a newline, a second key) into the
//! `.conf` files that downloadPeer writes.

use std::net::IpAddr;

/// A configuration name is an interface name: 1 to 15 of `[A-Za-z0-9_=+.-]`,
/// as wg-quick accepts them, and never "." or "..".
pub fn is_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'=' | b'+' | b'.' | b'-'))
        && name != "."
        && name != ".."
}

/// A WireGuard key: standard base64 of exactly 32 bytes (44 characters, one
/// `=` of padding, and the unused low bits of the last symbol zero).
pub fn is_key(key: &str) -> bool {
    decode_base64(key).is_some_and(|bytes| bytes.len() == 32) && key.len() == 44
}

fn b64_value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Canonical standard base64 with padding; None for anything else.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let pad = bytes.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let body = &bytes[..bytes.len() - pad];
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in body {
        acc = (acc << 6) | b64_value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Non-canonical encodings (stray low bits) are refused.
    if acc != 0 {
        return None;
    }
    Some(out)
}

/// One address with its prefix length, e.g. "10.0.0.1/24" or "fd00::1/64".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Strict: an IPv4 or IPv6 address, '/', a prefix length in range. A
    /// bare address is refused (callers decide whether to add /32).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = v4_mask(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether every address of `other` is inside this network.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

pub fn v4_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// A comma-separated list of CIDRs ("10.0.0.1/24, fd00::1/64"), at least
/// one, at most 64; None if any item is malformed.
pub fn cidr_list(text: &str) -> Option<Vec<Cidr>> {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.is_empty() || items.len() > 64 {
        return None;
    }
    items.into_iter().map(Cidr::parse).collect()
}

/// The list in its stored form: items as given (trimmed), ", "-separated.
pub fn normalize_list(text: &str) -> String {
    text.split(',')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(", ")
}

/// DNS servers for a client's `.conf`: a comma-separated list of IP
/// addresses or host names (search domains), nothing else.
pub fn is_dns_list(text: &str) -> bool {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    items.len() <= 16
        && items
            .iter()
            .all(|i| i.parse::<IpAddr>().is_ok() || is_hostname(i))
}

/// A DNS name: labels of `[A-Za-z0-9-]`, 1 to 63 each, not starting or
/// ending with '-', at most 253 characters in all.
pub fn is_hostname(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Free text (peer names, PreUp/PostUp/...): at most `max` bytes and no
/// control characters, so it can never add a line to a `.conf`.
pub fn is_text(text: &str, max: usize) -> bool {
    text.len() <= max && !text.chars().any(char::is_control)
}

/// The `i`-th host address (from 0) of an IPv4 network, for tests.
#[cfg(test)]
fn host(net: &str, i: u32) -> std::net::Ipv4Addr {
    let c = Cidr::parse(net).unwrap();
    let IpAddr::V4(a) = c.addr else { panic!() };
    std::net::Ipv4Addr::from((u32::from(a) & v4_mask(c.prefix)) + 1 + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_interface_names() {
        for good in ["wg0", "wg-office.1", "a", "A_b=c+d.e-f", "123456789012345"] {
            assert!(is_name(good), "{good}");
        }
        for bad in [
            "",
            "1234567890123456",
            "wg 0",
            "wg/0",
            "wg0;rm",
            "wg0\n",
            ".",
            "..",
            "wg\u{e9}",
            "wg$(x)",
        ] {
            assert!(!is_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_base64_of_32_bytes() {
        assert!(is_key("8DsSMli3okgUx5frKbFQ0fMW5ZMyqyxOdOW7+g21L18="));
        assert!(is_key("GQlGi8QJ93hWY7L2xlJyh+7S6+ekER9xP11T92T0O0Q="));
        for bad in [
            "",
            "8DsSMli3okgUx5frKbFQ0fMW5ZMyqyxOdOW7+g21L18",
            "8DsSMli3okgUx5frKbFQ0fMW5ZMyqyxOdOW7+g21L19=",
            "8DsSMli3okgUx5frKbFQ0fMW5ZMyqyxOdOW7-g21L18=",
            "8DsSMli3okgUx5frKbFQ0fMW5ZMyqyxOdOW7+g21L18=\n",
            "AAAA",
            "8DsSMli3okgUx5frKbFQ0fMW5ZMyqyxOdOW7+g21L18=AAAA",
        ] {
            assert!(!is_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8h").unwrap(), b"hello!");
        assert!(decode_base64("aGk").is_none());
        assert!(decode_base64("a===").is_none());
    }

    #[test]
    fn cidrs_are_strict() {
        assert_eq!(
            Cidr::parse("10.0.0.1/24").unwrap().to_string(),
            "10.0.0.1/24"
        );
        assert_eq!(Cidr::parse("fd00::1/64").unwrap().to_string(), "fd00::1/64");
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/",
            "10.0.0/24",
            "fd00::1/129",
            "10.0.0.1/24 ",
            "10.0.0.1/+4",
            "x/1",
            "10.0.0.1/0024",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad:?}");
        }
        assert!(cidr_list("10.0.0.1/24, fd00::1/64").is_some());
        assert!(cidr_list("10.0.0.1/24,").is_none());
        assert!(cidr_list("").is_none());
        assert_eq!(
            normalize_list("10.0.0.1/24 ,fd00::1/64"),
            "10.0.0.1/24, fd00::1/64"
        );
    }

    #[test]
    fn containment_and_overlap() {
        let net = Cidr::parse("10.0.0.1/24").unwrap();
        assert!(net.contains(host("10.0.0.0/24", 5).into()));
        assert!(!net.contains("10.0.1.1".parse().unwrap()));
        assert!(net.covers(&Cidr::parse("10.0.0.7/32").unwrap()));
        assert!(!net.covers(&Cidr::parse("10.0.0.0/16").unwrap()));
        assert!(net.overlaps(&Cidr::parse("10.0.0.0/16").unwrap()));
        assert!(!net.overlaps(&Cidr::parse("fd00::/8").unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
    }

    #[test]
    fn dns_and_text() {
        assert!(is_dns_list("1.1.1.1"));
        assert!(is_dns_list("1.1.1.1, 2606:4700:4700::1111, corp.example"));
        assert!(!is_dns_list("1.1.1.1\nPostUp = x"));
        assert!(!is_dns_list("1.1.1.1,"));
        assert!(!is_dns_list("-bad.example"));
        assert!(is_text("iptables -A FORWARD -i wg0 -j ACCEPT;", 4096));
        assert!(!is_text("a\nb", 4096));
        assert!(!is_text("abc", 2));
    }
}
