//! The cross-platform UAPI protocol (`get=1` / `set=1`) over a userspace device's socket.

#[allow(unused_imports)]
use super::*;

/// Where userspace implementations put their UAPI sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The largest UAPI answer read (a `get` of a few thousand peers).
pub(super) const MAX_UAPI_REPLY: usize = 16 << 20;

/// The UAPI socket of device `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

/// The UAPI `set=1` lines of one peer, from checked values only.
#[cfg(test)]
pub(super) fn peer_lines(peer: &PeerConfig) -> Result<String, Error> {
    check_peer(peer).map(|p| uapi_lines(&p))
}

/// The UAPI `set=1` lines of a checked peer.
pub(super) fn uapi_lines(p: &CheckedPeer) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "public_key={}", hex_key(&p.public_key));
    // All zeroes is how UAPI says "no preshared key".
    let _ = writeln!(
        out,
        "preshared_key={}",
        hex_key(&p.preshared_key.unwrap_or([0u8; 32]))
    );
    if let Some(endpoint) = p.endpoint {
        let _ = writeln!(out, "endpoint={endpoint}");
    }
    let _ = writeln!(out, "persistent_keepalive_interval={}", p.keepalive);
    out.push_str("replace_allowed_ips=true\n");
    for (ip, len) in &p.allowed_ips {
        let _ = writeln!(out, "allowed_ip={ip}/{len}");
    }
    out
}

// ---------------------------------------------------------------------------
// UAPI

/// One UAPI operation on device `name`: `request` (ending in an empty line)
/// out, the answer up to its terminating empty line back, `errno` checked.
pub(super) async fn uapi(name: &str, request: &str) -> Result<String, Error> {
    let path = socket_path(name);
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|e| Error::Os(format!("UAPI socket {}: {e}", path.display())))?;
    let io_err = |e: io::Error| Error::Os(format!("UAPI socket {}: {e}", path.display()));
    stream.write_all(request.as_bytes()).await.map_err(io_err)?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 8192];
    while !reply.ends_with(b"\n\n") {
        let n = stream.read(&mut chunk).await.map_err(io_err)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if reply.len() > MAX_UAPI_REPLY {
            return Err(Error::Os(format!(
                "the UAPI answer of `{name}` is over {MAX_UAPI_REPLY} bytes"
            )));
        }
    }
    let text = String::from_utf8(reply)
        .map_err(|_| Error::Os(format!("the UAPI answer of `{name}` is not UTF-8")))?;
    let errno = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("errno="))
        .and_then(|n| n.trim().parse::<i32>().ok())
        .ok_or_else(|| Error::Os(format!("the UAPI answer of `{name}` has no errno")))?;
    if errno != 0 {
        return Err(Error::Os(format!(
            "the userspace implementation refused: {}",
            io::Error::from_raw_os_error(errno)
        )));
    }
    Ok(text)
}

pub(super) async fn uapi_set(name: &str, body: &str) -> Result<(), Error> {
    uapi(name, &format!("set=1\n{body}\n")).await.map(drop)
}

/// What `get=1` says about a device.
#[derive(Debug, Default)]
pub(super) struct Reading {
    pub(super) public_key: Option<String>,
    pub(super) listen_port: Option<u16>,
    pub(super) peers: Vec<Peer>,
}

pub(super) fn parse_get(text: &str) -> Reading {
    let mut r = Reading::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key == "public_key" {
            r.peers.push(Peer {
                public_key: unhex_key(value).map(|k| encode_key(&k)).unwrap_or_default(),
                has_preshared_key: false,
                endpoint: None,
                allowed_ips: Vec::new(),
                latest_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
                persistent_keepalive: None,
            });
            continue;
        }
        match (r.peers.last_mut(), key) {
            (None, "private_key") => {
                r.public_key = unhex_key(value)
                    .filter(|k| *k != [0u8; 32])
                    .map(|k| encode_key(&public_of(&k)));
            }
            (None, "listen_port") => r.listen_port = value.parse().ok().filter(|p| *p != 0),
            (Some(p), "preshared_key") => {
                p.has_preshared_key = unhex_key(value).is_some_and(|k| k != [0u8; 32])
            }
            (Some(p), "endpoint") => p.endpoint = Some(value.to_string()),
            (Some(p), "allowed_ip") => p.allowed_ips.push(value.to_string()),
            (Some(p), "last_handshake_time_sec") => {
                p.latest_handshake = value.parse().ok().filter(|s| *s != 0);
            }
            (Some(p), "rx_bytes") => p.rx_bytes = value.parse().unwrap_or(0),
            (Some(p), "tx_bytes") => p.tx_bytes = value.parse().unwrap_or(0),
            (Some(p), "persistent_keepalive_interval") => {
                p.persistent_keepalive = value.parse().ok().filter(|s| *s != 0);
            }
            _ => {}
        }
    }
    r
}
