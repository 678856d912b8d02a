//! The WireGuard configurations: the list (with each one's live status and
//! data usage), adding one, toggling it on and off, one configuration's info
//! with its peers, and deleting one with everything it holds.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use wasmgate_sdk::{Error, Response, kv, log, wireguard};

use crate::api::{Call, int_field, str_field};
use crate::device::{self, Live};
use crate::envelope::{answer, done, fail, ok};
use crate::json;
use crate::paging;
use crate::store::{self, Conf, PeerRec};
use crate::time;
use crate::validate;

/// Reads the peers' live counters into kv and answers the configuration.
fn conf_with_peers<'a>(
    conf: &'a Conf,
    peers: &mut [PeerRec],
    live: &Live,
    now: u64,
) -> Result<json::ConfJson<'a>, Error> {
    device::observe(&conf.name, live, peers)?;
    Ok(json::conf(conf, peers, live, now))
}

fn names_under(prefix: &str) -> Result<HashSet<String>, Error> {
    Ok(kv::list(prefix)?
        .into_iter()
        .filter_map(|(k, _)| k.strip_prefix(prefix).map(str::to_string))
        .collect())
}

/// GET /api/getWireguardConfigurations, paged by name.
///
/// A configuration toggled on (`up/<name>`) is read from its device and
/// its peers. One that is off has no device (Status false, no connected
/// peer) and its DataUsage only changes with its revision: the cached
/// [`store::Sum`] answers while it is current, so listing configurations
/// that are off reads four small prefixes instead of every peer.
pub fn list(call: &Call) -> Result<Response, Error> {
    let paging = match paging::paging(call.req) {
        Ok(p) => p,
        Err(answer) => return Ok(answer),
    };
    let confs = store::confs()?;
    let revs: HashMap<String, u64> = kv::list_json::<u64>(store::REV_PREFIX)?
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(store::REV_PREFIX)?.to_string(), v)))
        .collect();
    let sums: HashMap<String, store::Sum> = kv::list_json::<store::Sum>(store::SUM_PREFIX)?
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(store::SUM_PREFIX)?.to_string(), v)))
        .collect();
    let up = names_under(store::UP_PREFIX)?;
    let live = Live::read_some(up.iter().map(String::as_str));
    let now = time::now_secs();
    let render = |conf: &Conf| -> Result<Vec<u8>, Error> {
        let name = conf.name.as_str();
        let rev = revs.get(name).copied().unwrap_or(0);
        if !up.contains(name)
            && let Some(sum) = sums.get(name).filter(|s| s.rev == rev)
        {
            return paging::to_json(&json::conf_with(conf, sum.rx, sum.tx, 0, false));
        }
        let mut peers = store::peers(name)?;
        let answer = conf_with_peers(conf, &mut peers, &live, now)?;
        if !up.contains(name) {
            let (rx, tx, _) = json::usage(name, &peers, &live, now);
            // Cached only if nothing changed the peers since `rev` was read
            // (nor deleted the configuration, which would restart its `rev`
            // and could make this sum look current for the next one).
            kv::transaction(|txn| {
                let now_rev: u64 = txn.get_json(&store::rev_key(name))?.unwrap_or(0);
                if now_rev == rev && txn.get(&store::conf_key(name))?.is_some() {
                    txn.set_json(&store::sum_key(name), &store::Sum { rev, rx, tx })?;
                }
                Ok(())
            })?;
        }
        paging::to_json(&answer)
    };
    paging::list(&confs, |c| c.name.as_str(), render, paging)
}

const REQUIRED: &str = "Please provide all required parameters.";

/// POST /api/addWireguardConfiguration.
pub fn add(call: &Call) -> Result<Response, Error> {
    let body = &call.body()?;
    let name = str_field(body, "ConfigurationName").unwrap_or_default();
    let address = match body.get("Address") {
        Some(Value::String(s)) => s.trim().to_string(),
        _ => String::new(),
    };
    let private_key = str_field(body, "PrivateKey").unwrap_or_default();
    let port = int_field(body, "ListenPort");
    if name.is_empty() || address.is_empty() || private_key.is_empty() || port.is_none() {
        return Ok(fail(REQUIRED));
    }
    if !validate::is_name(name) {
        return Ok(fail(
            "Configuration name must be 1 to 15 characters of A-Z a-z 0-9 _ = + . -",
        ));
    }
    let Some(Ok(port)) = port.filter(|p| p.is_ok_and(|p| (1..=65535).contains(&p))) else {
        return Ok(fail("Listen port must be a number from 1 to 65535"));
    };
    let port = port as u16;
    if validate::cidr_list(&address).is_none() || address.len() > 512 {
        return Ok(fail(
            "Address must be one or more addresses with a prefix length, e.g. 10.0.0.1/24",
        ));
    }
    let address = validate::normalize_list(&address);
    if !validate::is_key(private_key) {
        return Ok(fail(
            "PrivateKey must be a WireGuard key (base64 of 32 bytes)",
        ));
    }
    let public_key = wireguard::public_key(private_key)?;
    let given_public = str_field(body, "PublicKey").unwrap_or_default();
    if !given_public.is_empty() && given_public != public_key {
        return Ok(fail("PublicKey does not match PrivateKey"));
    }
    let preshared_key = str_field(body, "PresharedKey").unwrap_or_default();
    if !preshared_key.is_empty() && !validate::is_key(preshared_key) {
        return Ok(fail(
            "PresharedKey must be a WireGuard key (base64 of 32 bytes)",
        ));
    }
    let mut hooks = [String::new(), String::new(), String::new(), String::new()];
    for (i, field) in ["PreUp", "PreDown", "PostUp", "PostDown"]
        .iter()
        .enumerate()
    {
        let text = str_field(body, field).unwrap_or_default();
        if !validate::is_text(text, 4096) {
            return Ok(fail(format!(
                "{field} must be one line of at most 4096 characters"
            )));
        }
        hooks[i] = text.to_string();
    }
    let [pre_up, pre_down, post_up, post_down] = hooks;
    let conf = Conf {
        name: name.to_string(),
        address,
        listen_port: port,
        private_key: private_key.to_string(),
        public_key,
        preshared_key: preshared_key.to_string(),
        pre_up,
        pre_down,
        post_up,
        post_down,
    };
    let conflict = kv::transaction(|txn| {
        if txn.get(&store::conf_key(&conf.name))?.is_some() {
            return Ok(Some(format!(
                "Already have a configuration with the name \"{}\"",
                conf.name
            )));
        }
        if txn.get(&store::port_key(conf.listen_port))?.is_some() {
            return Ok(Some(format!(
                "Already have a configuration with the port  \"{}\"",
                conf.listen_port
            )));
        }
        if txn.get(&store::address_key(&conf.address))?.is_some() {
            return Ok(Some(format!(
                "Already have a configuration with the address  \"{}\"",
                conf.address
            )));
        }
        txn.set_json(&store::conf_key(&conf.name), &conf)?;
        txn.set_json(&store::port_key(conf.listen_port), &conf.name)?;
        txn.set_json(&store::address_key(&conf.address), &conf.name)?;
        Ok(None)
    })?;
    if let Some(message) = conflict {
        return Ok(fail(message));
    }
    log::info!("wgdashboard: configuration {} added", conf.name);
    Ok(done())
}

/// GET /api/toggleWireguardConfiguration/?configurationName=: data is the
/// status after the toggle.
pub fn toggle(call: &Call) -> Result<Response, Error> {
    let name = call.configuration();
    let name = name.as_str();
    let Some(conf) = (if validate::is_name(name) {
        store::conf(name)?
    } else {
        None
    }) else {
        return Ok(fail("Please provide a valid configuration name"));
    };
    let up = Live::read_one(name).is_up(name);
    let result = if up {
        device::stop(name)
    } else {
        device::start(&conf)
    };
    let now_up = Live::read_one(name).is_up(name);
    match result {
        Ok(()) => Ok(ok(&now_up)),
        Err(message) => {
            log::warn!("wgdashboard: toggling {name}: {message}");
            Ok(answer(200, false, &Value::String(message), &now_up))
        }
    }
}

/// GET /api/getWireguardConfigurationInfo?configurationName=. A page holds
/// the next peers in public-key order, each in the list it belongs to;
/// `configurationInfo` is the whole configuration's on every page.
pub fn info(call: &Call) -> Result<Response, Error> {
    let paging = match paging::paging(call.req) {
        Ok(p) => p,
        Err(answer) => return Ok(answer),
    };
    let name = call.configuration();
    let name = name.as_str();
    const MID: &[u8] = b"],\"configurationRestrictedPeers\":[";
    const CLOSE: &[u8] = b"]}";
    let Some(conf) = (if validate::is_name(name) {
        store::conf(name)?
    } else {
        None
    }) else {
        return Ok(fail("Please provide configuration name"));
    };
    let settings = store::settings()?;
    let live = Live::read_one(name);
    let now = time::now_secs();
    let mut peers = store::peers(name)?;
    device::observe(name, &live, &mut peers)?;
    let cap = paging::max_response_bytes()?;
    let mut head = b"{\"configurationInfo\":".to_vec();
    head.extend(paging::to_json(&json::conf(&conf, &peers, &live, now))?);
    head.extend_from_slice(b",\"configurationPeers\":[");
    let mut b = paging::Builder::new(&head, MID.len() + CLOSE.len(), cap);
    let render =
        |p: &PeerRec| paging::to_json(&json::peer(name, p, &live, &settings.remote_endpoint, now));
    let Some(paging) = paging else {
        let tail = paging::tail_for(None);
        for p in peers.iter().filter(|p| !p.restricted) {
            if !b.push(&render(p)?, tail) {
                return Ok(paging::too_large(peers.len(), cap));
            }
        }
        b.next_array(MID);
        for p in peers.iter().filter(|p| p.restricted) {
            if !b.push(&render(p)?, tail) {
                return Ok(paging::too_large(peers.len(), cap));
            }
        }
        return Ok(b.whole(CLOSE));
    };
    // The page is chosen in key order first, then split into its two lists;
    // a separator is counted for every entry, which only overestimates.
    let start = paging
        .cursor
        .as_deref()
        .map_or(0, |a| peers.partition_point(|p| p.id.as_str() <= a));
    let frame = b"{\"data\":".len() + head.len() + MID.len() + CLOSE.len();
    let (mut chosen, mut used, mut last, mut more) = (Vec::new(), 0, Value::Null, false);
    for p in &peers[start..] {
        let cursor = Value::String(p.id.clone());
        let item = render(p)?;
        if chosen.len() == paging.limit
            || frame + used + item.len() + 1 + paging::tail_for(Some(&cursor)) > cap
        {
            if chosen.is_empty() {
                return Err(paging::entry_error(cap));
            }
            more = true;
            break;
        }
        used += item.len() + 1;
        chosen.push((p.restricted, item));
        last = cursor;
    }
    for restricted in [false, true] {
        if restricted {
            b.next_array(MID);
        }
        for (_, item) in chosen.iter().filter(|(r, _)| *r == restricted) {
            b.push(item, 0);
        }
    }
    Ok(b.page(CLOSE, if more { &last } else { &Value::Null }))
}

/// POST /api/deleteWireguardConfiguration {Name}: the device (if any),
/// then every record of the configuration.
pub fn delete(call: &Call) -> Result<Response, Error> {
    let body = &call.body()?;
    let name = str_field(body, "Name").unwrap_or_default();
    let Some(conf) = (if validate::is_name(name) {
        store::conf(name)?
    } else {
        None
    }) else {
        return Ok(fail(
            "Please provide the configuration name you want to delete",
        ));
    };
    if let Err(message) = device::stop(name) {
        return Ok(fail(message));
    }
    let peer_keys = kv::transaction(|txn| {
        // Every change to the peers bumps `rev`: reading it here makes a
        // peer added after this read conflict the commit, and the retry
        // lists it too. The listing itself cannot be transactional.
        txn.get(&store::rev_key(name))?;
        txn.get(&store::conf_key(name))?;
        let peer_keys: Vec<String> = kv::list(&store::peers_prefix(name))?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        txn.delete(&store::conf_key(name))?;
        txn.delete(&store::port_key(conf.listen_port))?;
        txn.delete(&store::address_key(&conf.address))?;
        txn.delete(&store::rev_key(name))?;
        txn.delete(&store::sum_key(name))?;
        txn.delete(&store::up_key(name))?;
        for k in &peer_keys {
            txn.delete(k)?;
        }
        Ok(peer_keys)
    })?;
    log::info!(
        "wgdashboard: configuration {name} deleted with {} peer(s)",
        peer_keys.len()
    );
    Ok(done())
}
