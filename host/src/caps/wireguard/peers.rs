//! Peer arguments: endpoints, allowed IPs and the checked peer a plugin asked for, before anything reaches a device.

#[allow(unused_imports)]
use super::*;

/// The most allowed IPs one peer may have.
pub(super) const MAX_ALLOWED_IPS: usize = 1024;

/// `ip:port` or `[ip6]:port`, no host names (the host never resolves them).
pub(super) fn parse_endpoint(text: &str) -> Result<SocketAddr, Error> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        Error::Invalid(format!(
            "endpoint `{}` is not ip:port or [ip6]:port",
            shown(text)
        ))
    })?;
    if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(Error::Invalid(format!(
            "endpoint `{addr}` cannot be reached"
        )));
    }
    Ok(addr)
}

/// A CIDR such as `10.0.0.2/32`; a bare address means its host route.
pub(super) fn parse_allowed_ip(text: &str) -> Result<(IpAddr, u8), Error> {
    let bad = || {
        Error::Invalid(format!(
            "allowed IP `{}` is not a CIDR like 10.0.0.2/32",
            shown(text)
        ))
    };
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) && l.len() <= 3 => {
            l.parse::<u8>().map_err(|_| bad())?
        }
        Some(_) => return Err(bad()),
    };
    if len > max {
        return Err(Error::Invalid(format!(
            "allowed IP `{}`: prefix length {len} is over {max}",
            shown(text)
        )));
    }
    Ok((ip, len))
}

/// A peer's settings, checked and typed.
pub(super) struct CheckedPeer {
    pub(super) public_key: [u8; 32],
    pub(super) preshared_key: Option<[u8; 32]>,
    pub(super) endpoint: Option<SocketAddr>,
    /// 0 is off.
    pub(super) keepalive: u16,
    pub(super) allowed_ips: Vec<(IpAddr, u8)>,
}

pub(super) fn check_peer(peer: &PeerConfig) -> Result<CheckedPeer, Error> {
    if peer.allowed_ips.len() > MAX_ALLOWED_IPS {
        return Err(Error::Invalid(format!(
            "more than {MAX_ALLOWED_IPS} allowed IPs"
        )));
    }
    Ok(CheckedPeer {
        public_key: decode_key("public-key", &peer.public_key)?,
        preshared_key: peer
            .preshared_key
            .as_deref()
            .map(|k| decode_key("preshared-key", k))
            .transpose()?,
        endpoint: peer.endpoint.as_deref().map(parse_endpoint).transpose()?,
        keepalive: peer.persistent_keepalive.unwrap_or(0),
        allowed_ips: peer
            .allowed_ips
            .iter()
            .map(|a| parse_allowed_ip(a))
            .collect::<Result<_, _>>()?,
    })
}

/// A checked peer as a kernel change.
pub(super) fn peer_change(p: CheckedPeer) -> PeerChange {
    PeerChange {
        public_key: p.public_key,
        remove: false,
        preshared_key: Some(p.preshared_key),
        endpoint: p.endpoint,
        persistent_keepalive: Some(p.keepalive),
        allowed_ips: Some(p.allowed_ips),
    }
}
