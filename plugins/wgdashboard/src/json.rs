//! The original's JSON shapes for a configuration and a peer. Fields are
//! declared in sorted order, which is the order they serialise in.

use serde::Serialize;
use serde_json::Value;
use wasmgate_sdk::wireguard;

use crate::device::Live;
use crate::store::{Conf, PeerRec};

/// A handshake younger than this makes a peer "running" (connected).
pub const CONNECTED_SECS: u64 = 120;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB
}

#[derive(Serialize)]
#[allow(non_snake_case, reason = "the original's field names")]
pub struct DataUsage {
    pub Receive: f64,
    pub Sent: f64,
    pub Total: f64,
}

/// A configuration as getWireguardConfigurations answers it. `PrivateKey`
/// is always "": the server's private key never leaves kv and the device.
#[derive(Serialize)]
#[allow(non_snake_case, reason = "the original's field names")]
pub struct ConfJson<'a> {
    pub Address: &'a str,
    pub ConnectedPeers: usize,
    pub DataUsage: DataUsage,
    pub ListenPort: String,
    pub Name: &'a str,
    pub PostDown: &'a str,
    pub PostUp: &'a str,
    pub PreDown: &'a str,
    pub PreUp: &'a str,
    pub PrivateKey: &'static str,
    pub PublicKey: &'a str,
    pub SaveConfig: bool,
    pub Status: bool,
}

fn connected(peer: Option<&wireguard::Peer>, now: u64) -> bool {
    peer.and_then(|p| p.latest_handshake)
        .is_some_and(|hs| now.saturating_sub(hs) < CONNECTED_SECS)
}

/// Bytes received and sent by the unrestricted peers, and how many of them
/// are connected. `peers` have their usage already observed.
pub fn usage(conf: &str, peers: &[PeerRec], live: &Live, now: u64) -> (u64, u64, usize) {
    let (mut rx, mut tx, mut up) = (0u64, 0u64, 0usize);
    for p in peers.iter().filter(|p| !p.restricted) {
        rx += p.usage.total_rx();
        tx += p.usage.total_tx();
        if connected(live.peer(conf, &p.id), now) {
            up += 1;
        }
    }
    (rx, tx, up)
}

/// `peers` are the configuration's peers with their usage already observed.
pub fn conf<'a>(conf: &'a Conf, peers: &[PeerRec], live: &Live, now: u64) -> ConfJson<'a> {
    let (rx, tx, up) = usage(&conf.name, peers, live, now);
    conf_with(conf, rx, tx, up, live.is_up(&conf.name))
}

pub fn conf_with(conf: &Conf, rx: u64, tx: u64, connected: usize, status: bool) -> ConfJson<'_> {
    ConfJson {
        Address: &conf.address,
        ConnectedPeers: connected,
        DataUsage: DataUsage {
            Receive: gib(rx),
            Sent: gib(tx),
            Total: gib(rx + tx),
        },
        ListenPort: conf.listen_port.to_string(),
        Name: &conf.name,
        PostDown: &conf.post_down,
        PostUp: &conf.post_up,
        PreDown: &conf.pre_down,
        PreUp: &conf.pre_up,
        PrivateKey: "",
        PublicKey: &conf.public_key,
        SaveConfig: true,
        Status: status,
    }
}

/// A peer as the original lists it (its `Peer.__dict__`). `private_key` is
/// the client's own key when the dashboard generated it, never the server's.
#[derive(Serialize)]
#[allow(non_snake_case, reason = "the original's field names")]
pub struct PeerJson<'a> {
    pub DNS: &'a str,
    pub ShareLink: Vec<Value>,
    pub allowed_ip: &'a str,
    pub cumu_data: f64,
    pub cumu_receive: f64,
    pub cumu_sent: f64,
    pub endpoint: String,
    pub endpoint_allowed_ip: &'a str,
    pub id: &'a str,
    pub jobs: Vec<Value>,
    pub keepalive: u32,
    pub latest_handshake: String,
    pub mtu: u32,
    pub name: &'a str,
    pub preshared_key: &'a str,
    pub private_key: &'a str,
    pub remote_endpoint: &'a str,
    pub status: &'static str,
    pub total_data: f64,
    pub total_receive: f64,
    pub total_sent: f64,
}

/// Python's `str(timedelta(seconds=n))`: "0:01:05", "2 days, 3:04:05".
pub fn timedelta(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let hms = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        d => format!("{d} days, {hms}"),
    }
}

pub fn peer<'a>(
    conf: &str,
    p: &'a PeerRec,
    live: &Live,
    remote_endpoint: &'a str,
    now: u64,
) -> PeerJson<'a> {
    let lp = if p.restricted {
        None
    } else {
        live.peer(conf, &p.id)
    };
    let u = &p.usage;
    PeerJson {
        DNS: &p.dns,
        ShareLink: Vec::new(),
        allowed_ip: &p.allowed_ip,
        cumu_data: gib(u.cumu_rx + u.cumu_tx),
        cumu_receive: gib(u.cumu_rx),
        cumu_sent: gib(u.cumu_tx),
        endpoint: lp
            .and_then(|l| l.endpoint.clone())
            .unwrap_or_else(|| "N/A".into()),
        endpoint_allowed_ip: &p.endpoint_allowed_ip,
        id: &p.id,
        jobs: Vec::new(),
        keepalive: p.keepalive,
        latest_handshake: match lp.and_then(|l| l.latest_handshake) {
            Some(hs) => timedelta(now.saturating_sub(hs)),
            None => "No Handshake".into(),
        },
        mtu: p.mtu,
        name: &p.name,
        preshared_key: &p.preshared_key,
        private_key: &p.private_key,
        remote_endpoint,
        status: if connected(lp, now) {
            "running"
        } else {
            "stopped"
        },
        total_data: gib(u.session_rx() + u.session_tx()),
        total_receive: gib(u.session_rx()),
        total_sent: gib(u.session_tx()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timedelta_reads_like_python() {
        assert_eq!(timedelta(65), "0:01:05");
        assert_eq!(timedelta(3600 * 5 + 7), "5:00:07");
        assert_eq!(timedelta(86_400 + 1), "1 day, 0:00:01");
        assert_eq!(
            timedelta(2 * 86_400 + 3 * 3600 + 4 * 60 + 5),
            "2 days, 3:04:05"
        );
    }

    #[test]
    fn gib_is_bytes_over_1024_cubed() {
        assert_eq!(gib(1024 * 1024 * 1024), 1.0);
        assert_eq!(gib(0), 0.0);
        assert!(gib(84) > 0.0);
    }
}
