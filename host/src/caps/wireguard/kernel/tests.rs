//! Unit tests of the kernel backend.

use super::*;
use netlink_packet_wireguard::WireguardTimeSpec;

fn key(n: u8) -> [u8; 32] {
    [n; 32]
}

/// Private key, port, replace-peers and one peer with every setting: a
/// preshared key, an IPv4 endpoint, keepalive 25, 10.0.0.2/32 and `v6`.
fn one_peer_change(v6: (IpAddr, u8)) -> Change {
    Change {
        private_key: Some(key(1)),
        listen_port: Some(51820),
        replace_peers: true,
        peers: vec![PeerChange {
            public_key: key(2),
            remove: false,
            preshared_key: Some(Some(key(3))),
            endpoint: Some("192.0.2.1:51821".parse().unwrap()),
            persistent_keepalive: Some(25),
            allowed_ips: Some(vec![("10.0.0.2".parse().unwrap(), 32), v6]),
        }],
    }
}

/// Serialised and parsed again, as the kernel would read it.
fn round_trip(m: &WireguardMessage) -> WireguardMessage {
    let mut msg = GenlMessage::from_payload(m.clone());
    msg.set_resolved_family_id(0x20);
    let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    nl.finalize();
    let mut buf = vec![0; nl.buffer_len()];
    nl.serialize(&mut buf);
    let back = NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(&buf).expect("parses");
    match back.payload {
        NetlinkPayload::InnerMessage(m) => m.payload,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_small_change_is_one_message_with_everything() {
    let change = one_peer_change(("fd00::2".parse().unwrap(), 128));
    let messages = set_messages("wg0", &change);
    assert_eq!(messages.len(), 1);
    let back = round_trip(&messages[0]);
    assert_eq!(back, messages[0]);
    assert!(
        back.attributes
            .contains(&WireguardAttribute::IfName("wg0".into()))
    );
    assert!(
        back.attributes
            .contains(&WireguardAttribute::PrivateKey(key(1)))
    );
    assert!(
        back.attributes
            .contains(&WireguardAttribute::ListenPort(51820))
    );
    assert!(back.attributes.contains(&WireguardAttribute::Flags(
        WireguardDeviceFlags::ReplacePeers
    )));
    let WireguardAttribute::Peers(peers) = back.attributes.last().unwrap() else {
        panic!()
    };
    let p = &peers[0].0;
    assert!(p.contains(&WireguardPeerAttribute::Flags(
        WireguardPeerFlags::ReplaceAllowedIps
    )));
    assert!(p.contains(&WireguardPeerAttribute::PersistentKeepalive(25)));
}

#[test]
fn a_removal_sets_the_remove_flag_only() {
    let change = Change {
        peers: vec![PeerChange::removal(key(9))],
        ..Change::default()
    };
    let m = set_messages("wg0", &change);
    assert_eq!(m.len(), 1);
    let WireguardAttribute::Peers(peers) = m[0].attributes.last().unwrap() else {
        panic!()
    };
    assert_eq!(
        peers[0].0,
        vec![
            WireguardPeerAttribute::PublicKey(key(9)),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe)
        ]
    );
}

#[test]
fn large_changes_are_split_under_the_size_and_read_back_whole() {
    // 300 peers, one of them with 500 allowed IPs.
    let mut peers: Vec<PeerChange> = (0..300u32)
        .map(|i| PeerChange {
            public_key: {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_be_bytes());
                k[31] = 1;
                k
            },
            remove: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: Some(vec![(IpAddr::from([10, 1, (i >> 8) as u8, i as u8]), 32)]),
        })
        .collect();
    peers[7].allowed_ips = Some(
        (0..500u32)
            .map(|j| (IpAddr::from([10, 2, (j >> 8) as u8, j as u8]), 32))
            .collect(),
    );
    let change = Change {
        replace_peers: true,
        peers,
        ..Change::default()
    };
    let messages = set_messages("wg0", &change);
    assert!(messages.len() > 3, "{} messages", messages.len());
    for m in &messages {
        assert!(
            size(&m.attributes) <= MAX_ATTRIBUTES,
            "{} bytes",
            size(&m.attributes)
        );
        assert_eq!(m.attributes[0], WireguardAttribute::IfName("wg0".into()));
    }
    let replace = WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers);
    assert!(messages[0].attributes.contains(&replace));
    assert!(
        messages[1..]
            .iter()
            .all(|m| !m.attributes.contains(&replace))
    );
    // What the kernel would end up with, read as a get answer would be.
    let device = device_of(messages.iter().map(round_trip));
    assert_eq!(device.peers.len(), 300);
    assert_eq!(device.peers[7].allowed_ips.len(), 500);
    assert_eq!(
        device.peers[8].allowed_ips,
        vec![(IpAddr::from([10, 1, 0, 8]), 32)]
    );
    // Only the first part of the long peer replaces its list.
    let replacing = messages
        .iter()
        .flat_map(|m| &m.attributes)
        .filter_map(|a| match a {
            WireguardAttribute::Peers(p) => Some(p),
            _ => None,
        })
        .flatten()
        .filter(|p| p.0.contains(&WireguardPeerAttribute::PublicKey(change.peers[7].public_key)))
        .map(|p| p.0.iter().any(|a| matches!(a, WireguardPeerAttribute::Flags(f) if f.contains(WireguardPeerFlags::ReplaceAllowedIps))))
        .collect::<Vec<_>>();
    assert!(replacing.len() > 1);
    assert_eq!(replacing.iter().filter(|r| **r).count(), 1);
    assert!(replacing[0]);
}

#[test]
fn a_get_answer_reads_as_a_device() {
    let answer = WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![
            WireguardAttribute::IfName("wg0".into()),
            WireguardAttribute::PrivateKey(key(1)),
            WireguardAttribute::PublicKey(key(2)),
            WireguardAttribute::ListenPort(51820),
            WireguardAttribute::Peers(vec![
                WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey(key(3)),
                    WireguardPeerAttribute::PresharedKey([0; 32]),
                    WireguardPeerAttribute::Endpoint("192.0.2.9:4000".parse().unwrap()),
                    WireguardPeerAttribute::PersistentKeepalive(0),
                    WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                        seconds: 1_800_000_000,
                        nano_seconds: 5,
                    }),
                    WireguardPeerAttribute::RxBytes(1234),
                    WireguardPeerAttribute::TxBytes(5678),
                    WireguardPeerAttribute::AllowedIps(vec![allowed_ip(
                        "10.0.0.2".parse().unwrap(),
                        32,
                    )]),
                ]),
                WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey(key(4)),
                    WireguardPeerAttribute::PresharedKey(key(5)),
                    WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                        seconds: 0,
                        nano_seconds: 0,
                    }),
                    WireguardPeerAttribute::PersistentKeepalive(25),
                ]),
            ]),
        ],
    };
    // The second message of a dump goes on with peer 4's allowed IPs.
    let more = WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::Peers(vec![WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(key(4)),
            WireguardPeerAttribute::AllowedIps(vec![allowed_ip("fd00::4".parse().unwrap(), 128)]),
        ])])],
    };
    let device = device_of([round_trip(&answer), round_trip(&more)]);
    assert_eq!(device.public_key, Some(key(2)));
    assert_eq!(device.listen_port, Some(51820));
    assert_eq!(
        device.peers,
        vec![
            KernelPeer {
                public_key: key(3),
                has_preshared_key: false,
                endpoint: Some("192.0.2.9:4000".parse().unwrap()),
                allowed_ips: vec![("10.0.0.2".parse().unwrap(), 32)],
                latest_handshake: Some(1_800_000_000),
                rx_bytes: 1234,
                tx_bytes: 5678,
                persistent_keepalive: None,
            },
            KernelPeer {
                public_key: key(4),
                has_preshared_key: true,
                endpoint: None,
                allowed_ips: vec![("fd00::4".parse().unwrap(), 128)],
                latest_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
                persistent_keepalive: Some(25),
            },
        ]
    );
}

#[test]
fn a_set_message_is_byte_for_byte_what_the_kernel_reads() {
    use wire::*;
    let change = one_peer_change(("fd00:1::".parse().unwrap(), 64));
    let messages = set_messages("wg0", &change);
    assert_eq!(messages.len(), 1);
    let mut request = GenlMessage::from_payload(messages[0].clone());
    request.set_resolved_family_id(0x1d);
    let fd00: std::net::Ipv6Addr = "fd00:1::".parse().unwrap();
    let expected = wireguard(
        0x1d,
        NLM_F_REQUEST | NLM_F_ACK,
        7,
        WG_CMD_SET_DEVICE,
        &[
            nla(2, b"wg0\0"),
            nla(3, &key(1)),
            nla(6, &51820u16.to_ne_bytes()),
            // WGDEVICE_F_REPLACE_PEERS
            nla(5, &1u32.to_ne_bytes()),
            nest(
                8,
                &[nest(
                    0,
                    &[
                        nla(1, &key(2)),
                        // WGPEER_F_REPLACE_ALLOWEDIPS
                        nla(3, &2u32.to_ne_bytes()),
                        nla(2, &key(3)),
                        nla(4, &sockaddr_in([192, 0, 2, 1], 51821)),
                        nla(5, &25u16.to_ne_bytes()),
                        nest(
                            9,
                            &[
                                allowed_ip(2, &[10, 0, 0, 2], 32),
                                allowed_ip(10, &fd00.octets(), 64),
                            ],
                        ),
                    ],
                )],
            ),
        ],
    );
    assert_eq!(request_bytes(request, 7, false), expected);
}

#[test]
fn answers_of_other_requests_are_skipped_and_a_refusal_is_the_kernels_errno() {
    use wire::*;
    let mut answers: Vec<GenlMessage<WireguardMessage>> = Vec::new();
    let stale = wireguard(0x1d, NLM_F_MULTI, 3, WG_CMD_GET_DEVICE, &[nla(2, b"wg9\0")]);
    let ours = wireguard(0x1d, NLM_F_MULTI, 4, WG_CMD_GET_DEVICE, &[nla(2, b"wg0\0")]);
    assert!(!read_answers(&[stale.clone(), ours.clone()].concat(), 4, &mut answers).unwrap());
    assert!(read_answers(&[done(3), done(4)].concat(), 4, &mut answers).unwrap());
    assert_eq!(answers.len(), 1);
    assert_eq!(
        answers[0].payload.attributes,
        vec![WireguardAttribute::IfName("wg0".into())]
    );
    assert!(read_answers(&error(4, 0), 4, &mut answers).unwrap());
    let refused = read_answers(
        &[error(3, 0), error(4, libc::ENODEV)].concat(),
        4,
        &mut answers,
    )
    .unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::ENODEV));
    let truncated = &ours[..ours.len() - 2];
    assert_eq!(
        read_answers(truncated, 4, &mut answers).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}
