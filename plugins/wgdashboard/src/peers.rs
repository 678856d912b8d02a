//! A configuration's peers: adding one or a bulk of them on free addresses,
//! deleting, restricting and allowing access, updating their settings,
//! resetting their data usage, and the addresses still free.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};
use wasmgate_sdk::{Error, Response, kv, log, wireguard};

use crate::api::{Call, bool_field, int_field, str_field};
use crate::device::{self, Live};
use crate::envelope::{self, answer, done, fail, ok};
use crate::ipalloc;
use crate::json;
use crate::store::{self, Conf, PeerRec};
use crate::time;
use crate::validate::{self, Cidr};

/// The most peers one bulk add makes.
pub const MAX_BULK: u64 = 1000;
/// The most addresses getAvailableIPs lists.
pub const MAX_AVAILABLE: usize = 1000;

/// Every CIDR the peers route (restricted peers keep theirs reserved).
fn used_cidrs(peers: &[PeerRec], except: Option<&str>) -> Vec<Cidr> {
    peers
        .iter()
        .filter(|p| Some(p.id.as_str()) != except)
        .flat_map(|p| {
            p.allowed_ip
                .split(',')
                .filter_map(|a| Cidr::parse(a.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn networks(conf: &Conf) -> Vec<Cidr> {
    conf.address
        .split(',')
        .filter_map(|a| Cidr::parse(a.trim()))
        .collect()
}

/// The options a peer is made with, validated; the original's messages.
struct PeerOptions {
    dns: String,
    endpoint_allowed_ip: String,
    mtu: u32,
    keepalive: u32,
}

fn peer_options(
    body: &Map<String, Value>,
    defaults: Option<&PeerRec>,
) -> Result<PeerOptions, String> {
    let settings = store::settings().map_err(|e| e.message)?;
    let dns = match str_field(body, "DNS") {
        Some(d) => d.trim().to_string(),
        None => defaults.map_or(settings.peer_global_dns.clone(), |p| p.dns.clone()),
    };
    if !dns.is_empty() && !validate::is_dns_list(&dns) {
        return Err("DNS format is incorrect.".into());
    }
    let endpoint_allowed_ip = match str_field(body, "endpoint_allowed_ip") {
        Some(e) => e.trim().to_string(),
        None => defaults.map_or(settings.peer_endpoint_allowed_ip.clone(), |p| {
            p.endpoint_allowed_ip.clone()
        }),
    };
    if validate::cidr_list(&endpoint_allowed_ip).is_none() {
        return Err("Endpoint Allowed IPs format is incorrect.".into());
    }
    let mtu = match int_field(body, "mtu") {
        None => defaults.map_or(i64::from(settings.peer_mtu), |p| i64::from(p.mtu)),
        Some(Ok(m)) => m,
        Some(Err(())) => -1,
    };
    if !(0..=1460).contains(&mtu) {
        return Err("MTU format is not correct.".into());
    }
    let keepalive = match int_field(body, "keepalive") {
        None => defaults.map_or(i64::from(settings.peer_keepalive), |p| {
            i64::from(p.keepalive)
        }),
        Some(Ok(k)) => k,
        Some(Err(())) => -1,
    };
    if !(0..=65535).contains(&keepalive) {
        return Err("Persistent Keepalive format is not correct.".into());
    }
    Ok(PeerOptions {
        dns: validate::normalize_list(&dns)
            .trim_matches([',', ' '])
            .to_string(),
        endpoint_allowed_ip: validate::normalize_list(&endpoint_allowed_ip),
        mtu: mtu as u32,
        keepalive: keepalive as u32,
    })
}

/// allowed_ips as a list (the original's) or one comma-separated string.
fn allowed_ips_field(body: &Map<String, Value>, name: &str) -> Result<Vec<String>, String> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split(',').map(|x| x.trim().to_string()).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(|s| s.trim().to_string())
                    .ok_or_else(|| "Allowed IPs format is incorrect.".to_string())
            })
            .collect(),
        Some(_) => Err("Allowed IPs format is incorrect.".into()),
    }
}

/// "20250117_100000" for bulk peer names.
fn stamp(now: u64) -> String {
    let t = time::format_datetime(now);
    format!(
        "{}{}{}_{}{}{}",
        &t[0..4],
        &t[5..7],
        &t[8..10],
        &t[11..13],
        &t[14..16],
        &t[17..19]
    )
}

/// POST /api/addPeers/<configuration>: one peer (a given public key or a
/// generated key pair; given allowed IPs or the first free address) or
/// `bulkAdd` of `bulkAddAmount` generated peers on the first free
/// addresses. Answers the new peers. Adding never toggles the
/// configuration on; when it is on, the peers go on the device at once.
pub fn add(call: &Call) -> Result<Response, Error> {
    let body = &call.body()?;
    let conf_name = call.configuration();
    let conf_name = conf_name.as_str();
    let Some(conf) = (if validate::is_name(conf_name) {
        store::conf(conf_name)?
    } else {
        None
    }) else {
        return Ok(fail("Configuration does not exist"));
    };
    let options = match peer_options(body, None) {
        Ok(o) => o,
        Err(m) => return Ok(fail(m)),
    };
    let bulk = bool_field(body, "bulkAdd", false);
    let preshared_key = str_field(body, "preshared_key")
        .unwrap_or_default()
        .trim()
        .to_string();
    if !preshared_key.is_empty() && !validate::is_key(&preshared_key) {
        return Ok(fail("Preshared key format is incorrect."));
    }
    let name = str_field(body, "name").unwrap_or_default().to_string();
    if !validate::is_text(&name, 256) {
        return Ok(fail("Peer name must be one line of at most 256 characters"));
    }
    let nets = networks(&conf);
    let now = time::now_secs();

    // Single peer: its keys, checked before the transaction.
    let mut single_keys = (String::new(), String::new());
    let mut wanted_ips = Vec::new();
    let amount = if bulk {
        match int_field(body, "bulkAddAmount") {
            Some(Ok(n)) if n >= 1 && n as u64 <= MAX_BULK => n as usize,
            Some(Ok(n)) if n as u64 > MAX_BULK => {
                return Ok(fail(format!(
                    "At most {MAX_BULK} peers can be added at once"
                )));
            }
            _ => return Ok(fail("Please specify amount of peers you want to add")),
        }
    } else {
        let mut public_key = str_field(body, "public_key")
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut private_key = str_field(body, "private_key")
            .unwrap_or_default()
            .trim()
            .to_string();
        if !private_key.is_empty() && !validate::is_key(&private_key) {
            return Ok(fail("Private key format is incorrect."));
        }
        if !public_key.is_empty() && !validate::is_key(&public_key) {
            return Ok(fail("Public key format is incorrect."));
        }
        match (public_key.is_empty(), private_key.is_empty()) {
            (true, true) => {
                let pair = wireguard::generate_keypair();
                private_key = pair.private_key;
                public_key = pair.public_key;
            }
            (true, false) => public_key = wireguard::public_key(&private_key)?,
            (false, false) => {
                if wireguard::public_key(&private_key)? != public_key {
                    return Ok(fail(
                        "Provided Public Key does not match provided Private Key",
                    ));
                }
            }
            (false, true) => {}
        }
        single_keys = (public_key, private_key);
        wanted_ips = match allowed_ips_field(body, "allowed_ips") {
            Ok(ips) => ips,
            Err(m) => return Ok(fail(m)),
        };
        for ip in &wanted_ips {
            if Cidr::parse(ip).is_none() {
                return Ok(fail(format!("Allowed IPs format is incorrect: {ip}")));
            }
        }
        1
    };
    let validate_ips = bool_field(body, "allowed_ips_validation", true);
    let bulk_psk = bool_field(body, "preshared_key_bulkAdd", false);

    let outcome = kv::transaction(|txn| -> Result<Result<Vec<PeerRec>, String>, Error> {
        // Read in the transaction: a configuration deleted since the check
        // above must not get peers (they would outlive it and come back
        // with the next configuration of that name).
        if txn.get(&store::conf_key(&conf.name))?.is_none() {
            return Ok(Err("Configuration does not exist".into()));
        }
        let rev: u64 = txn.get_json(&store::rev_key(&conf.name))?.unwrap_or(0);
        let existing = store::peers(&conf.name)?;
        let used = used_cidrs(&existing, None);
        let mut new = Vec::new();
        if bulk {
            let free = ipalloc::available(&nets, &used, amount);
            if free.is_empty() {
                return Ok(Err("No more available IP can assign".into()));
            }
            if free.len() < amount {
                return Ok(Err(format!(
                    "The maximum number of peers can add is {}",
                    free.len()
                )));
            }
            let stamp = stamp(now);
            for (i, ip) in free.into_iter().enumerate() {
                let pair = wireguard::generate_keypair();
                new.push(PeerRec {
                    id: pair.public_key,
                    private_key: pair.private_key,
                    preshared_key: if bulk_psk {
                        wireguard::generate_preshared_key()
                    } else {
                        String::new()
                    },
                    name: format!("BulkPeer #{}_{stamp}", i + 1),
                    allowed_ip: ip,
                    dns: options.dns.clone(),
                    endpoint_allowed_ip: options.endpoint_allowed_ip.clone(),
                    mtu: options.mtu,
                    keepalive: options.keepalive,
                    ..PeerRec::default()
                });
            }
        } else {
            let (public_key, private_key) = &single_keys;
            if existing.iter().any(|p| &p.id == public_key) {
                return Ok(Err("This peer already exist".into()));
            }
            let ips = if wanted_ips.is_empty() {
                match ipalloc::available(&nets, &used, 1).pop() {
                    Some(ip) => vec![ip],
                    None => return Ok(Err("No more available IP can assign".into())),
                }
            } else {
                for ip in &wanted_ips {
                    let Some(c) = Cidr::parse(ip) else {
                        return Ok(Err(format!("Allowed IPs format is incorrect: {ip}")));
                    };
                    let inside = nets.iter().any(|n| {
                        Cidr {
                            addr: n.addr,
                            prefix: n.prefix,
                        }
                        .covers(&c)
                    });
                    let taken = used.iter().any(|u| u.overlaps(&c));
                    if taken || (validate_ips && !inside) {
                        return Ok(Err(format!("This IP is not available: {ip}")));
                    }
                }
                wanted_ips.clone()
            };
            new.push(PeerRec {
                id: public_key.clone(),
                private_key: private_key.clone(),
                preshared_key: preshared_key.clone(),
                name: name.clone(),
                allowed_ip: ips.join(", "),
                dns: options.dns.clone(),
                endpoint_allowed_ip: options.endpoint_allowed_ip.clone(),
                mtu: options.mtu,
                keepalive: options.keepalive,
                ..PeerRec::default()
            });
        }
        for p in &new {
            txn.set_json(&store::peer_key(&conf.name, &p.id), p)?;
        }
        txn.set_json(&store::rev_key(&conf.name), &(rev + 1))?;
        Ok(Ok(new))
    })?;
    let new = match outcome {
        Ok(new) => new,
        Err(message) => return Ok(fail(message)),
    };
    log::info!("wgdashboard: {} peer(s) added to {}", new.len(), conf.name);
    let refs: Vec<&PeerRec> = new.iter().collect();
    let settings = store::settings()?;
    let live = Live::read_one(&conf.name);
    let answer_peers: Vec<json::PeerJson> = new
        .iter()
        .map(|p| json::peer(&conf.name, p, &live, &settings.remote_endpoint, now))
        .collect();
    if let Err(message) = device::push_peers(&conf.name, &refs) {
        return Ok(fail_saved(&message, &answer_peers));
    }
    Ok(ok(&answer_peers))
}

/// The change is stored, but the live device refused it.
fn fail_saved<T: Serialize + ?Sized>(message: &str, data: &T) -> Response {
    envelope::fail_with(
        format!("Saved, but the device refused the change: {message}"),
        data,
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Delete,
    Restrict,
    Allow,
}

/// POST /api/deletePeers/<configuration> {peers: [public keys]}.
pub fn delete(call: &Call) -> Result<Response, Error> {
    change(call, Change::Delete)
}

/// POST /api/restrictPeers/<configuration> {peers: [public keys]}.
pub fn restrict(call: &Call) -> Result<Response, Error> {
    change(call, Change::Restrict)
}

/// POST /api/allowAccessPeers/<configuration> {peers: [public keys]}.
pub fn allow_access(call: &Call) -> Result<Response, Error> {
    change(call, Change::Allow)
}

fn change(call: &Call, change: Change) -> Result<Response, Error> {
    let body = &call.body()?;
    let conf_name = call.configuration();
    let conf_name = conf_name.as_str();
    let Some(conf) = (if validate::is_name(conf_name) {
        store::conf(conf_name)?
    } else {
        None
    }) else {
        return Ok(fail("Configuration does not exist"));
    };
    let ids: Vec<String> = match body.get("peers") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    if ids.is_empty() {
        return Ok(fail("Please specify one or more peers"));
    }
    let name = conf.name.as_str();
    let peers: HashMap<String, PeerRec> = store::peers(name)?
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    match change {
        Change::Allow => {
            if let Some(bad) = ids
                .iter()
                .find(|id| !peers.get(*id).is_some_and(|p| p.restricted))
            {
                return Ok(fail(format!("Failed to allow access of peer {bad}")));
            }
            let changed = set_restricted(name, &ids, false)?;
            let refs: Vec<&PeerRec> = changed.iter().collect();
            if let Err(message) = device::push_peers(name, &refs) {
                return Ok(fail_saved(&message, &Value::Null));
            }
            Ok(answer(
                200,
                true,
                &Value::String("Allow access successfully".into()),
                &Value::Null,
            ))
        }
        Change::Restrict | Change::Delete => {
            let found: Vec<String> = ids
                .iter()
                .filter(|id| peers.contains_key(*id))
                .cloned()
                .collect();
            let on_device: Vec<String> = found
                .iter()
                .filter(|id| peers.get(*id).is_some_and(|p| !p.restricted))
                .cloned()
                .collect();
            let pulled = device::pull_peers(name, &on_device);
            if change == Change::Delete {
                kv::transaction(|txn| {
                    let rev: u64 = txn.get_json(&store::rev_key(name))?.unwrap_or(0);
                    for id in &found {
                        txn.delete(&store::peer_key(name, id))?;
                    }
                    txn.set_json(&store::rev_key(name), &(rev + 1))
                })?;
            } else {
                set_restricted(name, &found, true)?;
            }
            if let Err(message) = pulled {
                return Ok(fail_saved(&message, &Value::Null));
            }
            let (verb, done_verb) = if change == Change::Delete {
                ("delete", "Deleted")
            } else {
                ("restrict", "Restricted")
            };
            log::info!("wgdashboard: {done_verb} {} peer(s) of {name}", found.len());
            if found.len() == ids.len() {
                Ok(answer(
                    200,
                    true,
                    &Value::String(format!("{done_verb} {} peer(s)", found.len())),
                    &Value::Null,
                ))
            } else {
                Ok(fail(format!(
                    "{done_verb} {} peer(s) successfully. Failed to {verb} {} peer(s)",
                    found.len(),
                    ids.len() - found.len()
                )))
            }
        }
    }
}

fn set_restricted(conf: &str, ids: &[String], restricted: bool) -> Result<Vec<PeerRec>, Error> {
    kv::transaction(|txn| {
        let rev: u64 = txn.get_json(&store::rev_key(conf))?.unwrap_or(0);
        let mut changed = Vec::new();
        for id in ids {
            let key = store::peer_key(conf, id);
            if let Some(mut p) = txn.get_json::<PeerRec>(&key)? {
                p.restricted = restricted;
                txn.set_json(&key, &p)?;
                changed.push(p);
            }
        }
        txn.set_json(&store::rev_key(conf), &(rev + 1))?;
        Ok(changed)
    })
}

/// POST /api/updatePeerSettings/<configuration> {id, name, private_key,
/// DNS, allowed_ip, endpoint_allowed_ip, preshared_key, mtu, keepalive};
/// a field left out keeps its value.
pub fn update(call: &Call) -> Result<Response, Error> {
    let body = &call.body()?;
    let conf_name = call.configuration();
    let conf_name = conf_name.as_str();
    const NO_PEER: &str = "Peer does not exist";
    let id = str_field(body, "id").unwrap_or_default().to_string();
    let conf = if validate::is_name(conf_name) {
        store::conf(conf_name)?
    } else {
        None
    };
    let (Some(conf), false) = (conf, id.is_empty()) else {
        return Ok(fail(NO_PEER));
    };
    let name = conf.name.as_str();
    let Some(current) = kv::get_json::<PeerRec>(&store::peer_key(name, &id))? else {
        return Ok(fail(NO_PEER));
    };
    let options = match peer_options(body, Some(&current)) {
        Ok(o) => o,
        Err(m) => return Ok(fail(m)),
    };
    let allowed_ip = match str_field(body, "allowed_ip") {
        Some(a) => a.trim().to_string(),
        None => current.allowed_ip.clone(),
    };
    if validate::cidr_list(&allowed_ip).is_none() {
        return Ok(fail("Allowed IPs format is incorrect."));
    }
    let private_key = str_field(body, "private_key")
        .map_or(current.private_key.clone(), |k| k.trim().to_string());
    if !private_key.is_empty()
        && (!validate::is_key(&private_key) || wireguard::public_key(&private_key)? != id)
    {
        return Ok(fail("Private key does not match with the public key."));
    }
    let preshared_key = str_field(body, "preshared_key")
        .map_or(current.preshared_key.clone(), |k| k.trim().to_string());
    if !preshared_key.is_empty() && !validate::is_key(&preshared_key) {
        return Ok(fail("Preshared key format is incorrect."));
    }
    let peer_name = str_field(body, "name").map_or(current.name.clone(), str::to_string);
    if !validate::is_text(&peer_name, 256) {
        return Ok(fail("Peer name must be one line of at most 256 characters"));
    }
    let allowed_ip = validate::normalize_list(&allowed_ip);
    let outcome = kv::transaction(|txn| -> Result<Result<PeerRec, String>, Error> {
        let rev: u64 = txn.get_json(&store::rev_key(name))?.unwrap_or(0);
        let key = store::peer_key(name, &id);
        let Some(mut p) = txn.get_json::<PeerRec>(&key)? else {
            return Ok(Err(NO_PEER.into()));
        };
        // Only the fields the request gives change: the values read before
        // the transaction may be stale, and writing them back would undo a
        // concurrent update of another field.
        let given = |field: &str| str_field(body, field).is_some();
        if given("name") {
            p.name.clone_from(&peer_name);
        }
        if given("private_key") {
            p.private_key.clone_from(&private_key);
        }
        if given("preshared_key") {
            p.preshared_key.clone_from(&preshared_key);
        }
        if given("allowed_ip") {
            p.allowed_ip.clone_from(&allowed_ip);
        }
        if given("DNS") {
            p.dns.clone_from(&options.dns);
        }
        if given("endpoint_allowed_ip") {
            p.endpoint_allowed_ip
                .clone_from(&options.endpoint_allowed_ip);
        }
        if int_field(body, "mtu").is_some() {
            p.mtu = options.mtu;
        }
        if int_field(body, "keepalive").is_some() {
            p.keepalive = options.keepalive;
        }
        let cidrs = validate::cidr_list(&p.allowed_ip).unwrap_or_default();
        let others = used_cidrs(&store::peers(name)?, Some(&id));
        if cidrs.iter().any(|c| others.iter().any(|o| o.overlaps(c))) {
            return Ok(Err("Allowed IP already taken by another peer.".into()));
        }
        txn.set_json(&key, &p)?;
        txn.set_json(&store::rev_key(name), &(rev + 1))?;
        Ok(Ok(p))
    })?;
    let p = match outcome {
        Ok(p) => p,
        Err(m) => return Ok(fail(m)),
    };
    if !p.restricted
        && let Err(message) = device::push_peers(name, &[&p])
    {
        return Ok(fail_saved(&message, &Value::Null));
    }
    Ok(done())
}

/// POST /api/resetPeerData/<configuration> {id, type: total|receive|sent}.
pub fn reset_data(call: &Call) -> Result<Response, Error> {
    let body = &call.body()?;
    let conf_name = call.configuration();
    let conf_name = conf_name.as_str();
    const NO_PEER: &str = "Configuration/Peer does not exist";
    let id = str_field(body, "id").unwrap_or_default();
    let conf = if validate::is_name(conf_name) {
        store::conf(conf_name)?
    } else {
        None
    };
    let (Some(conf), false) = (conf, id.is_empty()) else {
        return Ok(fail(NO_PEER));
    };
    let (receive, sent) = match str_field(body, "type").unwrap_or_default() {
        "total" => (true, true),
        "receive" => (true, false),
        "sent" => (false, true),
        _ => return Ok(fail("type must be total, receive or sent")),
    };
    let name = conf.name.as_str();
    let live = Live::read_one(name);
    let counters = live.peer(name, id).map(|p| (p.rx_bytes, p.tx_bytes));
    let key = store::peer_key(name, id);
    let found = kv::transaction(|txn| {
        let Some(mut p) = txn.get_json::<PeerRec>(&key)? else {
            return Ok(false);
        };
        if let (Some((rx, tx)), false) = (counters, p.restricted) {
            p.usage.observe(rx, tx);
        }
        p.usage.reset(receive, sent);
        txn.set_json(&key, &p)?;
        store::bump_rev(txn, name)?;
        Ok(true)
    })?;
    if !found {
        return Ok(fail(NO_PEER));
    }
    Ok(done())
}

/// GET /api/getAvailableIPs/<configuration>: the first free addresses (at
/// most [`MAX_AVAILABLE`]); status false when there are none.
pub fn available_ips(call: &Call) -> Result<Response, Error> {
    let conf_name = call.configuration();
    let conf_name = conf_name.as_str();
    let Some(conf) = (if validate::is_name(conf_name) {
        store::conf(conf_name)?
    } else {
        None
    }) else {
        return Ok(fail("Configuration does not exist"));
    };
    let peers = store::peers(&conf.name)?;
    let free = ipalloc::available(&networks(&conf), &used_cidrs(&peers, None), MAX_AVAILABLE);
    Ok(answer(200, !free.is_empty(), &Value::Null, &free))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_compact() {
        assert_eq!(stamp(1_737_108_000), "20250117_100000");
    }
}
