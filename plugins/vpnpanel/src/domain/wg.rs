//! WireGuard (`enable_wg1`): users' keys and tunnel addresses, and keeping
//! a server's WireGuard device in step with the panel's users while
//! counting each user's traffic on it. Users' client configs are made where
//! they are downloaded ([`crate::api::sub`]).
//!
//! Settings, on the panel and on a node alike:
//! - `wg_device`: this server's device, e.g. `vpnwg0`. Without it this
//!   server runs no WireGuard. The plugin's `wireguard` grant must match the
//!   name, and its `net` grant (with `write: true`) too, for the tunnel
//!   address.
//! - `wg_port` (default 51820): the device's listen port.
//! - `wg_subnet` (default `10.66.0.0/16`): the clients' addresses; a server
//!   takes the first one (`10.66.0.1`). Panel and nodes use the same.
//! - on the panel only, for client configs: `wg_client_allowed_ips`
//!   (default `0.0.0.0/0, ::/0`) and `wg_dns` (none by default).
//!
//! A user gets a key pair and an address the first time wg1 is on (at
//! creation or by an edit); turning wg1 off keeps them, revoke replaces the
//! key pair. Addresses are handed out in order through the subnet, wrapping
//! around; `wgaddr/<ip>` holds the user of each address in use.
//!
//! A server's sync: the device is created when it is missing (wireguard-go
//! devices end with the host, so after every restart), with the server's
//! key pair from kv (`wg/server`), its port and its address, and brought
//! up. Then each peer's transfer counters are read against what was
//! already counted (`wg/seen`: public key -> user and counted total; a
//! device made afresh counts from zero), and the peers are set to exactly
//! the active wg1 users allowed on this server, each with its address/32.
//! A peer with a handshake in the last [`CONNECTED_SECS`] is a connection.
//!
//! The panel syncs its own device (server `main`) after each change to users
//! and on every enforcement pass, and records the traffic itself
//! ([`crate::domain::panel_jobs::sync_main`]); a node syncs every
//! `sync_interval_secs` and whenever the panel asks, and reports its traffic
//! to the panel ([`crate::domain::node_mode`]). One sync runs at a time per
//! server ([`exclusive`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use wasmgate_sdk::wireguard::{self, PeerConfig};
use wasmgate_sdk::{Error, config, kv, log, net};

use crate::fail::Fail;
use crate::store::users::User;
use crate::store::wg::{LOCK_KEY, NEXT_ADDR_KEY, SEEN_KEY, SERVER_KEY, Seen, ServerKey, addr_key};
use crate::util;

pub const DEFAULT_PORT: u16 = 51820;

const DEFAULT_SUBNET: &str = "10.66.0.0/16";

/// A handshake younger than this is a connected client: WireGuard
/// re-handshakes every two minutes while traffic flows.
pub const CONNECTED_SECS: u64 = 180;

/// How long a sync may hold the lock before another may take it over.
const LOCK_SECS: u64 = 120;

/// An IPv4 subnet of client addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    net: u32,
    prefix: u8,
}

impl Subnet {
    /// `a.b.c.d/p` with p from 8 to 30; host bits are cleared.
    pub fn parse(s: &str) -> Option<Subnet> {
        let (addr, prefix) = s.trim().split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| (8..=30).contains(p))?;
        let mask = u32::MAX << (32 - prefix);
        Some(Subnet {
            net: u32::from(addr) & mask,
            prefix,
        })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Client addresses: all but the network, the server's and broadcast.
    fn clients(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 3
    }

    /// The server's address: the first one.
    pub fn server(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.net + 1)
    }

    fn client(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.net + 2 + offset)
    }
}

/// Setting `wg_subnet`, or the default when it is absent or malformed (a
/// malformed one is logged).
pub fn subnet() -> Subnet {
    let default = Subnet::parse(DEFAULT_SUBNET).expect("the default subnet parses");
    match config::get("wg_subnet") {
        None => default,
        Some(s) => Subnet::parse(&s).unwrap_or_else(|| {
            log::write(
                log::Level::Warn,
                &format!("vpnpanel: setting wg_subnet {s:?} is not an IPv4 subnet from /8 to /30; using {DEFAULT_SUBNET}"),
            );
            default
        }),
    }
}

/// This server's WireGuard device, from the settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub port: u16,
}

/// A Linux interface name: 1 to 15 characters, no `/`, space or `:`.
pub fn is_device_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Setting `wg_device` (and `wg_port`); None when this server runs no
/// WireGuard.
pub fn device() -> Option<Device> {
    let name = config::get("wg_device")?.trim().to_string();
    if !is_device_name(&name) {
        log::write(
            log::Level::Warn,
            &format!("vpnpanel: setting wg_device {name:?} is not an interface name"),
        );
        return None;
    }
    let port = config::get("wg_port")
        .and_then(|p| p.trim().parse().ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_PORT);
    Some(Device { name, port })
}

/// This server's key pair, made on first use.
fn server_key() -> Result<ServerKey, Error> {
    if let Some(k) = kv::get_json::<ServerKey>(SERVER_KEY)? {
        return Ok(k);
    }
    let fresh = wireguard::generate_keypair();
    kv::transaction(|txn| match txn.get_json::<ServerKey>(SERVER_KEY)? {
        Some(k) => Ok(k),
        None => {
            let k = ServerKey {
                private_key: fresh.private_key.clone(),
                public_key: fresh.public_key.clone(),
            };
            txn.set_json(SERVER_KEY, &k)?;
            Ok(k)
        }
    })
}

/// What this server tells about its WireGuard: `{public_key, port}`, or
/// null when it runs none.
pub fn server_info() -> Result<Value, Error> {
    match device() {
        Some(d) => Ok(json!({ "public_key": server_key()?.public_key, "port": d.port })),
        None => Ok(Value::Null),
    }
}

/// Hands out addresses inside one transaction.
pub struct Pool {
    subnet: Subnet,
    next: u32,
    moved: bool,
}

impl Pool {
    pub fn open(txn: &kv::Txn) -> Result<Pool, Error> {
        let subnet = subnet();
        let next = txn.get_json::<u32>(NEXT_ADDR_KEY)?.unwrap_or(0) % subnet.clients();
        Ok(Pool {
            subnet,
            next,
            moved: false,
        })
    }

    /// Gives `u` a key pair and an address when wg1 is on and it has none.
    pub fn assign(&mut self, txn: &kv::Txn, u: &mut User) -> Result<(), Error> {
        if !u.enable_wg1 || u.wg_address.is_some() {
            return Ok(());
        }
        if u.wg_public_key.is_none() {
            rotate(u);
        }
        let clients = self.subnet.clients();
        for i in 0..clients {
            let offset = (self.next + i) % clients;
            let ip = self.subnet.client(offset).to_string();
            if txn.get(&addr_key(&ip))?.is_none() {
                txn.set(&addr_key(&ip), u.username.as_bytes())?;
                self.next = (offset + 1) % clients;
                self.moved = true;
                u.wg_address = Some(ip);
                return Ok(());
            }
        }
        Err(Error::conflict(
            "No WireGuard address is free in wg_subnet.",
        ))
    }

    pub fn close(self, txn: &kv::Txn) -> Result<(), Error> {
        if self.moved {
            txn.set_json(NEXT_ADDR_KEY, &self.next)?;
        }
        Ok(())
    }
}

/// A new key pair for `u` (revoke; the first assignment).
pub fn rotate(u: &mut User) {
    let k = wireguard::generate_keypair();
    u.wg_private_key = Some(k.private_key);
    u.wg_public_key = Some(k.public_key);
}

/// A peer a server should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub username: String,
    pub public_key: String,
    pub address: String,
}

impl Want {
    /// The peer of `u` when it should be on a server it may use.
    pub fn of(u: &User) -> Option<Want> {
        if !(u.enable_wg1 && u.is_active()) {
            return None;
        }
        Some(Want {
            username: u.username.clone(),
            public_key: u.wg_public_key.clone()?,
            address: u.wg_address.clone()?,
        })
    }
}

/// One user's use of this server since the last sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub username: String,
    pub bytes: u64,
    pub connected: bool,
}

/// What a sync read: the device and the counters, not yet committed.
pub struct Reading {
    pub device: wireguard::Device,
    pub usage: Vec<Usage>,
    /// `wg/seen` as it was read, and as it is once this reading counts.
    stored: Seen,
    after: Seen,
}

/// Creates, configures and brings up the device as needed: whether it was
/// created, and its peers as they are now (read once when nothing changed).
fn ensure_device(d: &Device) -> Result<(bool, wireguard::Device), Error> {
    let key = server_key()?;
    let (created, unchanged) = match wireguard::get_device(&d.name) {
        Ok(dev)
            if dev.public_key.as_deref() == Some(key.public_key.as_str())
                && dev.listen_port == Some(d.port) =>
        {
            (false, Some(dev))
        }
        Ok(_) => {
            wireguard::configure_device(&d.name, Some(&key.private_key), Some(d.port), false)?;
            (false, None)
        }
        Err(e) if e.status == 404 => {
            wireguard::create_device(&d.name)?;
            wireguard::configure_device(&d.name, Some(&key.private_key), Some(d.port), true)?;
            log::write(
                log::Level::Info,
                &format!(
                    "vpnpanel: created WireGuard device {} on port {}",
                    d.name, d.port
                ),
            );
            (true, None)
        }
        Err(e) => return Err(e),
    };
    let subnet = subnet();
    let server = subnet.server().to_string();
    let link = net::get_link(&d.name)?;
    if !link.addresses.iter().any(|a| a.address == server) {
        net::add_address(&d.name, &net::Address::new(server, subnet.prefix()))?;
    }
    if !link.admin_up {
        wireguard::set_up(&d.name, true)?;
    }
    let device = match unchanged {
        Some(dev) => dev,
        None => wireguard::get_device(&d.name)?,
    };
    Ok((created, device))
}

/// Pure part of [`read`]: usage from the device's peers against `seen`.
fn count(peers: &[wireguard::Peer], seen: &Seen, now: u64) -> (Vec<Usage>, Seen) {
    let mut usage = Vec::new();
    let mut after = seen.clone();
    for p in peers {
        let Some((user, counted)) = seen.peers.get(&p.public_key) else {
            continue;
        };
        let total = p.rx_bytes.saturating_add(p.tx_bytes);
        let bytes = if total >= *counted {
            total - counted
        } else {
            total
        };
        let connected = p
            .latest_handshake
            .is_some_and(|h| now.saturating_sub(h) < CONNECTED_SECS);
        usage.push(Usage {
            username: user.clone(),
            bytes,
            connected,
        });
        after
            .peers
            .insert(p.public_key.clone(), (user.clone(), total));
    }
    (usage, after)
}

/// Makes sure the device is there and reads its counters.
pub fn read(d: &Device) -> Result<Reading, Error> {
    let (created, device) = ensure_device(d)?;
    let stored = kv::get_json::<Seen>(SEEN_KEY)?.unwrap_or_default();
    let mut before = stored.clone();
    if created {
        // Fresh counters: what was counted before belongs to the old device.
        for (_, counted) in before.peers.values_mut() {
            *counted = 0;
        }
    }
    let (usage, after) = count(&device.peers, &before, util::now_secs());
    Ok(Reading {
        device,
        usage,
        stored,
        after,
    })
}

/// Records that the reading's traffic is counted; false (nothing written)
/// when another sync counted in between.
pub fn commit(r: &Reading) -> Result<bool, Error> {
    kv::transaction(|txn| {
        if txn.get_json::<Seen>(SEEN_KEY)?.unwrap_or_default() != r.stored {
            return Ok(false);
        }
        txn.set_json(SEEN_KEY, &r.after)?;
        Ok(true)
    })
}

/// Sets the device's peers to exactly `wants`.
pub fn apply(d: &Device, device: &wireguard::Device, wants: &[Want]) -> Result<(), Error> {
    let by_key: BTreeMap<&str, &Want> = wants.iter().map(|w| (w.public_key.as_str(), w)).collect();
    let mut removed = 0;
    for p in &device.peers {
        if !by_key.contains_key(p.public_key.as_str()) {
            match wireguard::remove_peer(&d.name, &p.public_key) {
                Ok(()) => removed += 1,
                Err(e) if e.status == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut added = 0;
    for w in wants {
        let ips = vec![format!("{}/32", w.address)];
        let has = device.peers.iter().find(|p| p.public_key == w.public_key);
        if has.is_some_and(|p| p.allowed_ips == ips) {
            continue;
        }
        wireguard::set_peer(&d.name, &PeerConfig::new(w.public_key.clone(), ips))?;
        added += 1;
    }
    kv::transaction(|txn| {
        let mut seen = txn.get_json::<Seen>(SEEN_KEY)?.unwrap_or_default();
        seen.peers.retain(|k, _| by_key.contains_key(k.as_str()));
        for w in wants {
            let slot = seen
                .peers
                .entry(w.public_key.clone())
                .or_insert_with(|| (w.username.clone(), 0));
            slot.0 = w.username.clone();
        }
        txn.set_json(SEEN_KEY, &seen)
    })?;
    if added + removed > 0 {
        log::write(
            log::Level::Info,
            &format!(
                "vpnpanel: WireGuard device {}: {added} peer(s) set, {removed} removed",
                d.name
            ),
        );
    }
    Ok(())
}

/// Runs `f` unless another sync holds this server's lock; then that one
/// runs again when it is done, so no change waits for the next period.
pub fn exclusive(mut f: impl FnMut() -> Result<(), Fail>) -> Result<(), Fail> {
    let now = util::now_secs();
    let mine = kv::transaction(|txn| {
        let held = txn.get_json::<(u64, bool)>(LOCK_KEY)?;
        match held {
            Some((until, _)) if until > now => {
                txn.set_json(LOCK_KEY, &(until, true))?;
                Ok(false)
            }
            _ => {
                txn.set_json(LOCK_KEY, &(now + LOCK_SECS, false))?;
                Ok(true)
            }
        }
    })?;
    if !mine {
        return Ok(());
    }
    let mut rounds = 0;
    loop {
        rounds += 1;
        let outcome = f();
        let again = kv::transaction(|txn| {
            let asked = txn
                .get_json::<(u64, bool)>(LOCK_KEY)?
                .is_some_and(|(_, again)| again);
            let again = asked && outcome.is_ok() && rounds < 3;
            if again {
                txn.set_json(LOCK_KEY, &(util::now_secs() + LOCK_SECS, false))?;
            } else {
                txn.delete(LOCK_KEY)?;
            }
            Ok(again)
        })?;
        if !again {
            return outcome;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s = Subnet::parse("10.66.1.7/16").unwrap();
        assert_eq!(s.server(), Ipv4Addr::new(10, 66, 0, 1));
        assert_eq!(s.client(0), Ipv4Addr::new(10, 66, 0, 2));
        assert_eq!(s.clients(), 65_533);
        let small = Subnet::parse("192.168.5.0/30").unwrap();
        assert_eq!(small.clients(), 1);
        for bad in [
            "10.0.0.0",
            "10.0.0.0/31",
            "10.0.0.0/7",
            "x/16",
            "10.0.0.0/a",
            "::/64",
        ] {
            assert!(Subnet::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn device_names() {
        assert!(is_device_name("vpnwg0"));
        assert!(!is_device_name(""));
        assert!(!is_device_name("a-very-long-name-x"));
        assert!(!is_device_name("wg 0"));
        assert!(!is_device_name("wg/0"));
    }

    fn peer(key: &str, rx: u64, tx: u64, handshake: Option<u64>) -> wireguard::Peer {
        wireguard::Peer {
            public_key: key.into(),
            has_preshared_key: false,
            endpoint: None,
            allowed_ips: vec![],
            latest_handshake: handshake,
            rx_bytes: rx,
            tx_bytes: tx,
            persistent_keepalive: None,
        }
    }

    #[test]
    fn counting_takes_deltas_restarts_from_zero_and_skips_unknown_peers() {
        let mut seen = Seen::default();
        seen.peers.insert("A".into(), ("alice".into(), 100));
        seen.peers.insert("B".into(), ("bob".into(), 5_000));
        let peers = [
            peer("A", 100, 50, Some(1_000)),
            peer("B", 10, 10, None),
            peer("X", 1, 1, Some(1_000)),
        ];
        let (usage, after) = count(&peers, &seen, 1_100);
        assert_eq!(
            usage,
            vec![
                Usage {
                    username: "alice".into(),
                    bytes: 50,
                    connected: true
                },
                // The counters went down: the device was made afresh.
                Usage {
                    username: "bob".into(),
                    bytes: 20,
                    connected: false
                },
            ]
        );
        assert_eq!(after.peers["A"], ("alice".into(), 150));
        assert_eq!(after.peers["B"], ("bob".into(), 20));
        assert!(!after.peers.contains_key("X"));
        let (usage, _) = count(&peers, &seen, 1_000 + CONNECTED_SECS);
        assert!(!usage[0].connected);
    }

    #[test]
    fn only_active_users_with_keys_are_wanted() {
        let mut u = User {
            username: "alice".into(),
            enabled: true,
            enable_wg1: true,
            wg_public_key: Some("K".into()),
            wg_address: Some("10.66.0.2".into()),
            ..User::default()
        };
        assert_eq!(Want::of(&u).map(|w| w.address), Some("10.66.0.2".into()));
        u.limited = true;
        assert_eq!(Want::of(&u), None);
        u.limited = false;
        u.enable_wg1 = false;
        assert_eq!(Want::of(&u), None);
    }
}
