//! The live side: WireGuard devices through the host's `wireguard`
//! capability and their addresses through `net`. kv is the source of truth;
//! a device is made from it when a configuration is toggled on and deleted
//! when it is toggled off. Nothing here runs a shell, and PreUp, PostUp,
//! PreDown and PostDown are never executed.

use std::collections::{HashMap, HashSet};

use wasmgate_sdk::wireguard::{self, Device, PeerConfig};
use wasmgate_sdk::{Error, kv, log, net};

use crate::store::{self, Conf, PeerRec};
use crate::validate::Cidr;

/// The live state of the devices the listing needs, read once per request.
pub struct Live {
    devices: HashMap<String, Device>,
}

impl Live {
    /// Reads these devices; one that does not exist (or cannot be read: the
    /// grant, the backend) is "no device", Status false.
    pub fn read_some<'a>(names: impl IntoIterator<Item = &'a str>) -> Live {
        let mut devices = HashMap::new();
        for name in names {
            match wireguard::get_device(name) {
                Ok(d) => {
                    devices.insert(name.to_string(), d);
                }
                Err(e) if e.status == 404 => {}
                Err(e) => log::warn!("wgdashboard: reading device {name}: {}", e.message),
            }
        }
        Live { devices }
    }

    /// One device only.
    pub fn read_one(name: &str) -> Live {
        let mut devices = HashMap::new();
        if let Ok(d) = wireguard::get_device(name) {
            devices.insert(name.to_string(), d);
        }
        Live { devices }
    }

    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.get(name)
    }

    /// Status: the interface exists and is up.
    pub fn is_up(&self, name: &str) -> bool {
        self.device(name).is_some_and(|d| d.up)
    }

    /// The live peer of `conf` with this public key.
    pub fn peer(&self, conf: &str, public_key: &str) -> Option<&wireguard::Peer> {
        self.device(conf)?
            .peers
            .iter()
            .find(|p| p.public_key == public_key)
    }
}

/// Takes the live counters of the configuration's peers into their stored
/// usage (only the peers whose counters moved are written). Returns the
/// peers as updated.
pub fn observe(conf: &str, live: &Live, peers: &mut [PeerRec]) -> Result<(), Error> {
    if live.device(conf).is_none() {
        return Ok(());
    }
    for p in peers.iter_mut().filter(|p| !p.restricted) {
        let Some(lp) = live.peer(conf, &p.id) else {
            continue;
        };
        let mut probe = p.usage;
        // Only a peer whose counters moved costs a write.
        if !probe.observe(lp.rx_bytes, lp.tx_bytes) {
            continue;
        }
        let key = store::peer_key(conf, &p.id);
        let (rx, tx) = (lp.rx_bytes, lp.tx_bytes);
        if let Some(updated) = kv::transaction(|txn| {
            let Some(mut rec) = txn.get_json::<PeerRec>(&key)? else {
                return Ok(None);
            };
            if rec.usage.observe(rx, tx) {
                txn.set_json(&key, &rec)?;
            }
            Ok(Some(rec.usage))
        })? {
            p.usage = updated;
        }
    }
    Ok(())
}

/// Ends the device session of these peers in kv: their live counters (the
/// device's, else the last seen) join the cumulative ones.
pub fn end_sessions(conf: &str, live: &Live, ids: &[String]) -> Result<(), Error> {
    for id in ids {
        let key = store::peer_key(conf, id);
        let counters = live.peer(conf, id).map(|p| (p.rx_bytes, p.tx_bytes));
        kv::transaction(|txn| {
            let Some(mut rec) = txn.get_json::<PeerRec>(&key)? else {
                return Ok(());
            };
            if let Some((rx, tx)) = counters {
                rec.usage.observe(rx, tx);
            }
            rec.usage.end_session();
            txn.set_json(&key, &rec)?;
            store::bump_rev(txn, conf)
        })?;
    }
    Ok(())
}

/// What the device is told about a peer.
pub fn peer_config(p: &PeerRec) -> PeerConfig {
    PeerConfig {
        public_key: p.id.clone(),
        preshared_key: (!p.preshared_key.is_empty()).then(|| p.preshared_key.clone()),
        endpoint: None,
        allowed_ips: p
            .allowed_ip
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        persistent_keepalive: None,
    }
}

/// Toggle on: a fresh device from kv. A device of that name that exists but
/// is down is replaced (its counters are saved first). On any failure the
/// half-made device is deleted and the error returned.
pub fn start(conf: &Conf) -> Result<(), String> {
    let name = conf.name.as_str();
    let live = Live::read_one(name);
    let peers = store::peers(name).map_err(|e| e.message)?;
    let ids: Vec<String> = peers
        .iter()
        .filter(|p| !p.restricted)
        .map(|p| p.id.clone())
        .collect();
    // Counters of a session that ended without us (a host restart took the
    // device) or of the device about to be replaced.
    end_sessions(name, &live, &ids).map_err(|e| e.message)?;
    if live.device(name).is_some() {
        wireguard::delete_device(name).map_err(|e| e.message)?;
    }
    wireguard::create_device(name).map_err(|e| e.message)?;
    let result = (|| -> Result<(), Error> {
        wireguard::configure_device(name, Some(&conf.private_key), Some(conf.listen_port), true)?;
        for p in peers.iter().filter(|p| !p.restricted) {
            wireguard::set_peer(name, &peer_config(p))?;
        }
        for cidr in conf
            .address
            .split(',')
            .filter_map(|a| Cidr::parse(a.trim()))
        {
            net::add_address(name, &net::Address::new(cidr.addr.to_string(), cidr.prefix))?;
        }
        wireguard::set_up(name, true)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = wireguard::delete_device(name);
        return Err(e.message);
    }
    kv::set_json(&store::up_key(name), &true).map_err(|e| e.message)?;
    log::info!("wgdashboard: {name} is up with {} peer(s)", ids.len());
    Ok(())
}

/// Toggle off: saves the counters, brings the link down and deletes the
/// device. A device that is already gone is not an error.
pub fn stop(name: &str) -> Result<(), String> {
    let live = Live::read_one(name);
    if live.device(name).is_none() {
        kv::delete(&store::up_key(name)).map_err(|e| e.message)?;
        return Ok(());
    }
    let ids: Vec<String> = store::peers(name)
        .map_err(|e| e.message)?
        .into_iter()
        .filter(|p| !p.restricted)
        .map(|p| p.id)
        .collect();
    end_sessions(name, &live, &ids).map_err(|e| e.message)?;
    let _ = wireguard::set_up(name, false);
    wireguard::delete_device(name).map_err(|e| e.message)?;
    kv::delete(&store::up_key(name)).map_err(|e| e.message)?;
    log::info!("wgdashboard: {name} is down");
    Ok(())
}

/// Puts these peers on the device when it exists (addPeers, allowAccess,
/// updatePeerSettings). Errors are the device's refusals.
pub fn push_peers(conf: &str, peers: &[&PeerRec]) -> Result<(), String> {
    if wireguard::get_device(conf).is_err() {
        return Ok(());
    }
    for p in peers {
        wireguard::set_peer(conf, &peer_config(p)).map_err(|e| e.message)?;
    }
    Ok(())
}

/// Takes these peers off the device when it exists, saving their counters
/// first (deletePeers, restrictPeers).
pub fn pull_peers(conf: &str, ids: &[String]) -> Result<(), String> {
    let live = Live::read_one(conf);
    let Some(device) = live.device(conf) else {
        return Ok(());
    };
    let on_device: HashSet<&str> = device.peers.iter().map(|p| p.public_key.as_str()).collect();
    end_sessions(conf, &live, ids).map_err(|e| e.message)?;
    for id in ids.iter().filter(|id| on_device.contains(id.as_str())) {
        wireguard::remove_peer(conf, id).map_err(|e| e.message)?;
    }
    Ok(())
}
