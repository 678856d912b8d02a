//! The kernel's WireGuard over generic netlink: the `wireguard` family's
//! `WG_CMD_GET_DEVICE` (a dump, which the kernel may split over several
//! messages, a peer's allowed IPs included) and `WG_CMD_SET_DEVICE` (split
//! here the same way, so that no message outgrows the kernel's buffer), as
//! wg(8) speaks them. Messages are the typed ones of
//! `netlink-packet-wireguard`; the socket is a plain blocking generic
//! netlink socket made inside the grant's namespace, with a receive
//! timeout, used from a blocking task.
//!
//! Only checked values reach here (the capability, [`super`], parses keys,
//! endpoints and addresses first).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use netlink_packet_core::{Emitable, ParseableParametrized};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_GENERIC;

/// The attribute bytes of one set message at most: wg(8) keeps whole
/// messages within a page.
pub const MAX_ATTRIBUTES: usize = 3_600;
/// How long one answer of the kernel may take.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A device as the kernel reports it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KernelDevice {
    pub public_key: Option<[u8; 32]>,
    pub listen_port: Option<u16>,
    pub peers: Vec<KernelPeer>,
}

#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct KernelPeer {
    pub public_key: [u8; 32],
    pub has_preshared_key: bool,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Unix seconds; none before the first handshake.
    pub latest_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
}

/// A change to a device, as one `WG_CMD_SET_DEVICE` (before splitting).
#[derive(Debug, Default, Clone)]
pub struct Change {
    pub private_key: Option<[u8; 32]>,
    pub listen_port: Option<u16>,
    pub replace_peers: bool,
    pub peers: Vec<PeerChange>,
}

#[derive(Debug, Clone)]
pub struct PeerChange {
    pub public_key: [u8; 32],
    pub remove: bool,
    /// `Some(None)` clears the preshared key.
    pub preshared_key: Option<Option<[u8; 32]>>,
    pub endpoint: Option<SocketAddr>,
    /// `Some(0)` turns it off.
    pub persistent_keepalive: Option<u16>,
    /// Replaces the peer's list when set.
    pub allowed_ips: Option<Vec<(IpAddr, u8)>>,
}

impl Kernel {
    /// The family id this socket speaks to.
    pub fn family(&self) -> u16 {
        self.family
    }
}

impl PeerChange {
    /// Removes the peer with `public_key`.
    pub fn removal(public_key: [u8; 32]) -> PeerChange {
        PeerChange {
            public_key,
            remove: true,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: None,
        }
    }
}

/// A generic netlink socket with the `wireguard` family resolved.
pub struct Kernel {
    socket: Socket,
    family: u16,
    sequence: u32,
}

/// A generic netlink socket in `netns` (None: the host's namespace): made
/// on a thread of its own that enters the namespace and ends.
fn socket_in(netns: Option<&Path>) -> io::Result<Socket> {
    let Some(path) = netns else {
        return Socket::new(NETLINK_GENERIC);
    };
    let ns = crate::util::netns::open(path)?;
    crate::util::netns::make_in(ns, || Socket::new(NETLINK_GENERIC))
}

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as _,
        tv_usec: timeout.subsec_micros() as _,
    };
    // SAFETY: a valid socket and a timeval of the size given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Kernel {
    /// Generic netlink in `netns` for the family id `family` (from
    /// [`Kernel::open`], which a caller keeps: the id does not change while
    /// the module stays loaded).
    pub fn connect(netns: Option<&Path>, family: u16) -> io::Result<Kernel> {
        let mut socket = socket_in(netns)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        set_recv_timeout(&socket, RECV_TIMEOUT)?;
        Ok(Kernel {
            socket,
            family,
            sequence: 0,
        })
    }

    /// Generic netlink in `netns` with the `wireguard` family resolved;
    /// `None` when the kernel has no WireGuard (no such family).
    pub fn open(netns: Option<&Path>) -> io::Result<Option<Kernel>> {
        let mut k = Kernel::connect(netns, 0)?;
        let ask = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(
                WireguardMessage::family_name().to_string(),
            )],
        });
        match k.exchange(ask, false) {
            Ok(answers) => {
                let id = answers
                    .iter()
                    .flat_map(|m| &m.payload.nlas)
                    .find_map(|a| match a {
                        GenlCtrlAttrs::FamilyId(id) => Some(*id),
                        _ => None,
                    });
                Ok(id.map(|family| Kernel { family, ..k }))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends one request and reads every answer up to the end of a dump or
    /// the acknowledgement; a refusal is the kernel's errno.
    fn exchange<F>(
        &mut self,
        mut payload: GenlMessage<F>,
        dump: bool,
    ) -> io::Result<Vec<GenlMessage<F>>>
    where
        F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
    {
        payload.set_resolved_family_id(self.family);
        self.sequence = self.sequence.wrapping_add(1);
        self.socket
            .send(&request_bytes(payload, self.sequence, dump), 0)?;

        let mut answers = Vec::new();
        loop {
            let (bytes, _) = self.socket.recv_from_full()?;
            if read_answers(&bytes, self.sequence, &mut answers)? {
                return Ok(answers);
            }
        }
    }

    /// The device `name`; ENODEV when there is none.
    pub fn get(&mut self, name: &str) -> io::Result<KernelDevice> {
        let ask = GenlMessage::from_payload(WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::IfName(name.to_string())],
        });
        let answers = self.exchange(ask, true)?;
        Ok(device_of(answers.into_iter().map(|m| m.payload)))
    }

    /// Applies `change` to device `name`, in as many messages as it takes.
    pub fn set(&mut self, name: &str, change: &Change) -> io::Result<()> {
        for message in set_messages(name, change) {
            self.exchange(GenlMessage::from_payload(message), false)?;
        }
        Ok(())
    }
}

/// A request as it goes on the socket: acknowledged, a dump if `dump`.
pub fn request_bytes<F>(payload: GenlMessage<F>, sequence: u32, dump: bool) -> Vec<u8>
where
    F: GenlFamily + Emitable + std::fmt::Debug,
{
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | if dump { NLM_F_DUMP } else { 0 };
    header.sequence_number = sequence;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    message.finalize();
    let mut out = vec![0; message.buffer_len()];
    message.serialize(&mut out);
    out
}

/// Reads one receive buffer (one or more netlink messages) into `answers`,
/// keeping only those to request `sequence`: true once the exchange is over
/// (the end of a dump, or the acknowledgement), false when more is to come.
/// A refusal is the kernel's errno.
pub fn read_answers<F>(
    bytes: &[u8],
    sequence: u32,
    answers: &mut Vec<GenlMessage<F>>,
) -> io::Result<bool>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
{
    let mut offset = 0;
    while offset < bytes.len() {
        let reply = NetlinkMessage::<GenlMessage<F>>::deserialize(&bytes[offset..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let length = reply.header.length as usize;
        if length == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a netlink message of length 0",
            ));
        }
        offset += (length + 3) & !3;
        if reply.header.sequence_number != sequence {
            continue;
        }
        match reply.payload {
            NetlinkPayload::InnerMessage(m) => answers.push(m),
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) => {
                return match e.code {
                    None => Ok(true),
                    Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                };
            }
            _ => {}
        }
    }
    Ok(false)
}

/// The device the answers of a get describe: a peer that goes on in the
/// next message (more allowed IPs) is merged into one.
pub fn device_of(messages: impl IntoIterator<Item = WireguardMessage>) -> KernelDevice {
    let mut device = KernelDevice::default();
    for message in messages {
        for attribute in message.attributes {
            match attribute {
                WireguardAttribute::PublicKey(k) if k != [0; 32] => device.public_key = Some(k),
                WireguardAttribute::ListenPort(p) if p != 0 => device.listen_port = Some(p),
                WireguardAttribute::Peers(peers) => {
                    for WireguardPeer(attributes) in peers {
                        let peer = peer_of(attributes);
                        match device.peers.last_mut() {
                            Some(last) if last.public_key == peer.public_key => {
                                last.allowed_ips.extend(peer.allowed_ips);
                            }
                            _ => device.peers.push(peer),
                        }
                    }
                }
                _ => {}
            }
        }
    }
    device
}

fn peer_of(attributes: Vec<WireguardPeerAttribute>) -> KernelPeer {
    let mut peer = KernelPeer::default();
    for attribute in attributes {
        match attribute {
            WireguardPeerAttribute::PublicKey(k) => peer.public_key = k,
            WireguardPeerAttribute::PresharedKey(k) => peer.has_preshared_key = k != [0; 32],
            WireguardPeerAttribute::Endpoint(e) if e.port() != 0 || !e.ip().is_unspecified() => {
                peer.endpoint = Some(e)
            }
            WireguardPeerAttribute::PersistentKeepalive(s) if s != 0 => {
                peer.persistent_keepalive = Some(s)
            }
            WireguardPeerAttribute::LastHandshake(t) if t.seconds > 0 => {
                peer.latest_handshake = Some(t.seconds as u64)
            }
            WireguardPeerAttribute::RxBytes(n) => peer.rx_bytes = n,
            WireguardPeerAttribute::TxBytes(n) => peer.tx_bytes = n,
            WireguardPeerAttribute::AllowedIps(ips) => {
                for WireguardAllowedIp(parts) in ips {
                    let mut ip = None;
                    let mut cidr = None;
                    for part in parts {
                        match part {
                            WireguardAllowedIpAttr::IpAddr(a) => ip = Some(a),
                            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(c),
                            _ => {}
                        }
                    }
                    if let (Some(ip), Some(cidr)) = (ip, cidr) {
                        peer.allowed_ips.push((ip, cidr));
                    }
                }
            }
            _ => {}
        }
    }
    peer
}

fn allowed_ip(ip: IpAddr, cidr: u8) -> WireguardAllowedIp {
    let family = if ip.is_ipv4() {
        WireguardAddressFamily::Ipv4
    } else {
        WireguardAddressFamily::Ipv6
    };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(ip),
        WireguardAllowedIpAttr::Cidr(cidr),
    ])
}

/// Bytes `attributes` take in a message.
fn size(attributes: &[WireguardAttribute]) -> usize {
    attributes.buffer_len()
}

/// `change` as set messages of at most [`MAX_ATTRIBUTES`] attribute bytes
/// each. Device settings and `replace_peers` go in the first only; a peer
/// whose allowed IPs do not fit goes on in the next message with its key
/// and the rest of its list (the kernel appends them).
pub fn set_messages(name: &str, change: &Change) -> Vec<WireguardMessage> {
    let head = vec![WireguardAttribute::IfName(name.to_string())];
    let mut first = head.clone();
    if let Some(k) = change.private_key {
        first.push(WireguardAttribute::PrivateKey(k));
    }
    if let Some(p) = change.listen_port {
        first.push(WireguardAttribute::ListenPort(p));
    }
    if change.replace_peers {
        first.push(WireguardAttribute::Flags(
            WireguardDeviceFlags::ReplacePeers,
        ));
    }
    let mut messages: Vec<Vec<WireguardAttribute>> = vec![first];
    let mut peers: Vec<WireguardPeer> = Vec::new();

    // Closes the message being filled and starts the next.
    fn flush(
        messages: &mut Vec<Vec<WireguardAttribute>>,
        peers: &mut Vec<WireguardPeer>,
        head: &[WireguardAttribute],
    ) {
        if !peers.is_empty() {
            messages
                .last_mut()
                .expect("a message")
                .push(WireguardAttribute::Peers(std::mem::take(peers)));
            messages.push(head.to_vec());
        }
    }
    let room = |messages: &Vec<Vec<WireguardAttribute>>,
                peers: &Vec<WireguardPeer>,
                extra: &WireguardPeer| {
        let mut trial = peers.clone();
        trial.push(extra.clone());
        let mut attributes = messages.last().expect("a message").clone();
        attributes.push(WireguardAttribute::Peers(trial));
        size(&attributes) <= MAX_ATTRIBUTES
    };

    for p in &change.peers {
        let mut base = vec![WireguardPeerAttribute::PublicKey(p.public_key)];
        let mut flags = WireguardPeerFlags::empty();
        if p.remove {
            flags |= WireguardPeerFlags::RemoveMe;
        }
        if p.allowed_ips.is_some() {
            flags |= WireguardPeerFlags::ReplaceAllowedIps;
        }
        if !flags.is_empty() {
            base.push(WireguardPeerAttribute::Flags(flags));
        }
        match p.preshared_key {
            Some(Some(k)) => base.push(WireguardPeerAttribute::PresharedKey(k)),
            Some(None) => base.push(WireguardPeerAttribute::PresharedKey([0; 32])),
            None => {}
        }
        if let Some(e) = p.endpoint {
            base.push(WireguardPeerAttribute::Endpoint(e));
        }
        if let Some(s) = p.persistent_keepalive {
            base.push(WireguardPeerAttribute::PersistentKeepalive(s));
        }
        let ips: Vec<WireguardAllowedIp> = p
            .allowed_ips
            .iter()
            .flatten()
            .map(|(ip, cidr)| allowed_ip(*ip, *cidr))
            .collect();
        // The peer's settings with as many allowed IPs as fit; the rest of
        // the list goes on under its key alone in the next messages. One
        // entry with one address always fits in a message of its own.
        let entry = |attributes: &[WireguardPeerAttribute], ips: &[WireguardAllowedIp]| {
            let mut a = attributes.to_vec();
            if !ips.is_empty() {
                a.push(WireguardPeerAttribute::AllowedIps(ips.to_vec()));
            }
            WireguardPeer(a)
        };
        let mut rest = ips.as_slice();
        let mut attributes = base;
        loop {
            let least = usize::from(!rest.is_empty());
            if !room(&messages, &peers, &entry(&attributes, &rest[..least])) {
                flush(&mut messages, &mut peers, &head);
            }
            let mut n = least;
            while n < rest.len() && room(&messages, &peers, &entry(&attributes, &rest[..n + 1])) {
                n += 1;
            }
            peers.push(entry(&attributes, &rest[..n]));
            rest = &rest[n..];
            if rest.is_empty() {
                break;
            }
            flush(&mut messages, &mut peers, &head);
            attributes = vec![WireguardPeerAttribute::PublicKey(p.public_key)];
        }
    }
    if !peers.is_empty() {
        messages
            .last_mut()
            .expect("a message")
            .push(WireguardAttribute::Peers(peers));
    } else if messages.len() > 1 && messages.last().is_some_and(|m| m.len() == head.len()) {
        messages.pop();
    }
    messages
        .into_iter()
        .map(|attributes| WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes,
        })
        .collect()
}

/// Netlink bytes written by hand from the kernel's ABI (netlink(7) and
/// `include/uapi/linux/wireguard.h`), so that tests check the messages
/// against what the kernel reads and writes rather than against the crate
/// that makes and parses them.
#[cfg(test)]
pub(crate) mod wire {
    pub const NLM_F_REQUEST: u16 = 0x1;
    pub const NLM_F_MULTI: u16 = 0x2;
    pub const NLM_F_ACK: u16 = 0x4;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const WG_CMD_GET_DEVICE: u8 = 0;
    pub const WG_CMD_SET_DEVICE: u8 = 1;
    const NLA_F_NESTED: u16 = 0x8000;

    /// One attribute: length, type, value, padded to 4 bytes.
    pub fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let length = 4 + value.len();
        let mut out = Vec::with_capacity(length.next_multiple_of(4));
        out.extend_from_slice(
            &u16::try_from(length)
                .expect("a short attribute")
                .to_ne_bytes(),
        );
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(length.next_multiple_of(4), 0);
        out
    }

    /// A nested attribute of `parts`.
    pub fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        nla(kind | NLA_F_NESTED, &parts.concat())
    }

    /// `nlmsghdr` (port id 0, the kernel's) and `body`.
    pub fn netlink(kind: u16, flags: u16, sequence: u32, body: &[u8]) -> Vec<u8> {
        let length = u32::try_from(16 + body.len()).expect("a short message");
        let mut out = Vec::new();
        out.extend_from_slice(&length.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&sequence.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(body);
        out
    }

    /// A `wireguard` generic netlink message (`WG_GENL_VERSION` 1).
    pub fn wireguard(
        family: u16,
        flags: u16,
        sequence: u32,
        cmd: u8,
        attributes: &[Vec<u8>],
    ) -> Vec<u8> {
        let mut body = vec![cmd, 1, 0, 0];
        body.extend(attributes.concat());
        netlink(family, flags, sequence, &body)
    }

    /// The end of a dump.
    pub fn done(sequence: u32) -> Vec<u8> {
        netlink(NLMSG_DONE, NLM_F_MULTI, sequence, &0i32.to_ne_bytes())
    }

    /// An acknowledgement (`errno` 0) or a refusal, quoting a request header.
    pub fn error(sequence: u32, errno: i32) -> Vec<u8> {
        let mut body = (-errno).to_ne_bytes().to_vec();
        body.extend(netlink(0x1d, NLM_F_REQUEST, sequence, &[]));
        netlink(NLMSG_ERROR, 0, sequence, &body)
    }

    /// `struct sockaddr_in`.
    pub fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut out = 2u16.to_ne_bytes().to_vec();
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&[0; 8]);
        out
    }

    /// `struct sockaddr_in6`, no flow label or scope.
    pub fn sockaddr_in6(ip: [u8; 16], port: u16) -> Vec<u8> {
        let mut out = 10u16.to_ne_bytes().to_vec();
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&ip);
        out.extend_from_slice(&[0; 4]);
        out
    }

    /// `struct __kernel_timespec`.
    pub fn timespec(seconds: i64, nanoseconds: i64) -> Vec<u8> {
        let mut out = seconds.to_ne_bytes().to_vec();
        out.extend_from_slice(&nanoseconds.to_ne_bytes());
        out
    }

    /// One `WGALLOWEDIP_A_*` entry of a list.
    pub fn allowed_ip(family: u16, address: &[u8], cidr: u8) -> Vec<u8> {
        nest(
            0,
            &[
                nla(1, &family.to_ne_bytes()),
                nla(2, address),
                nla(3, &[cidr]),
            ],
        )
    }
}

#[cfg(test)]
mod tests;
