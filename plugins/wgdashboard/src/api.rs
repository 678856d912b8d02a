//! The public API under the mount prefix (`/api/`): every endpoint is one
//! line of [`ENDPOINTS`]; [`handle`] authenticates the caller
//! ([`auth::caller`]), finds the endpoint, checks its method and runs its
//! handler with the [`Call`]. Endpoints that name a configuration take it
//! from the path (`addPeers/wg0`) or, where the original used the query,
//! from `configurationName`.

use std::collections::{HashMap, HashSet};

use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::{Map, Value};
use wasmgate_sdk::{Error, Request, Response, kv, log, wireguard};

use crate::auth::{self, Caller};
use crate::device::{self, Live};
use crate::envelope::{self, answer, done, fail, ok};
use crate::ipalloc;
use crate::json;
use crate::paging;
use crate::store::{self, Conf, PeerRec};
use crate::time;
use crate::validate::{self, Cidr};

use Access::{Authenticated, Public};

/// Every endpoint under the mount, one line each: its path, its method, who
/// may call it, its handler. The path is the endpoint's name, plus
/// `/<configuration>` when the configuration may be named in the path
/// (`addPeers/wg0`) instead of in `?configurationName=`; any other path
/// below a name is 404.
#[rustfmt::skip]
const ENDPOINTS: &[Endpoint] = &[
    //       path                                  method  access         handler
    Endpoint("handshake",                          "GET",  Authenticated, handshake),
    Endpoint("validateAuthentication",             "GET",  Public,        auth::validate),
    Endpoint("isTotpEnabled",                      "GET",  Public,        auth::totp_enabled),
    Endpoint("authenticate",                       "POST", Public,        auth::authenticate),
    Endpoint("signout",                            "GET",  Authenticated, auth::signout),
    Endpoint("getWireguardConfigurations",         "GET",  Authenticated, get_configurations),
    Endpoint("addWireguardConfiguration",          "POST", Authenticated, add_configuration),
    Endpoint("toggleWireguardConfiguration",       "GET",  Authenticated, toggle),
    Endpoint("getWireguardConfigurationInfo",      "GET",  Authenticated, configuration_info),
    Endpoint("deleteWireguardConfiguration",       "POST", Authenticated, delete_configuration),
    Endpoint("addPeers/<configuration>",           "POST", Authenticated, add_peers),
    Endpoint("deletePeers/<configuration>",        "POST", Authenticated, delete_peers),
    Endpoint("restrictPeers/<configuration>",      "POST", Authenticated, restrict_peers),
    Endpoint("allowAccessPeers/<configuration>",   "POST", Authenticated, allow_access_peers),
    Endpoint("updatePeerSettings/<configuration>", "POST", Authenticated, update_peer),
    Endpoint("resetPeerData/<configuration>",      "POST", Authenticated, reset_peer_data),
    Endpoint("downloadPeer/<configuration>",       "GET",  Authenticated, download_peer),
    Endpoint("getAvailableIPs/<configuration>",    "GET",  Authenticated, available_ips),
    Endpoint("getDashboardAPIKeys",                "GET",  Authenticated, auth::get_keys),
    Endpoint("newDashboardAPIKey",                 "POST", Authenticated, auth::new_key),
    Endpoint("deleteDashboardAPIKey",              "POST", Authenticated, auth::delete_key),
];

/// The suffix of an endpoint's path that names its configuration.
const CONFIGURATION_SEGMENT: &str = "/<configuration>";

/// The most peers one bulk add makes.
pub const MAX_BULK: u64 = 1000;
/// The most addresses getAvailableIPs lists.
pub const MAX_AVAILABLE: usize = 1000;

/// Who may call an endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone, even without an API key or a session.
    Public,
    /// A live API key or session only; anyone else gets 401.
    Authenticated,
}

/// An endpoint's handler: runs after authentication, path and method are
/// checked.
type Handler = fn(&Call) -> Result<Response, Error>;

/// One line of [`ENDPOINTS`]: path, method, access, handler.
struct Endpoint(&'static str, &'static str, Access, Handler);

impl Endpoint {
    /// The first segment of the path, as requested.
    fn name(&self) -> &'static str {
        self.0.strip_suffix(CONFIGURATION_SEGMENT).unwrap_or(self.0)
    }

    /// Whether the path may carry a configuration after the name.
    fn takes_configuration(&self) -> bool {
        self.0.ends_with(CONFIGURATION_SEGMENT)
    }
}

/// One request, as an endpoint's handler sees it.
pub struct Call<'a> {
    pub req: &'a Request,
    pub caller: &'a Caller,
    /// The configuration named in the path (percent-decoded), or "".
    path_configuration: &'a str,
}

impl Call<'_> {
    /// The configuration the request names: in the path, else in
    /// `?configurationName=` (else "").
    pub fn configuration(&self) -> String {
        if self.path_configuration.is_empty() {
            self.req.query("configurationName").unwrap_or_default()
        } else {
            self.path_configuration.to_string()
        }
    }

    /// The JSON object body; anything else is a 400.
    pub fn body(&self) -> Result<Map<String, Value>, Error> {
        self.req
            .json::<Map<String, Value>>()
            .map_err(|_| Error::bad_request("Request body must be a JSON object"))
    }

    /// A key from the query: form decoding turns an unescaped '+' of base64
    /// into a space, which a key never has.
    pub fn query_key(&self, name: &str) -> String {
        self.req.query(name).unwrap_or_default().replace(' ', "+")
    }
}

pub fn handle(req: &Request) -> Response {
    let path = req.path().trim_start_matches('/');
    let (name, arg) = match path.split_once('/') {
        Some((e, rest)) => (e, rest.trim_end_matches('/')),
        None => (path, ""),
    };
    let endpoint = ENDPOINTS.iter().find(|e| e.name() == name);
    let public = endpoint.is_some_and(|e| e.2 == Public);
    let caller = match auth::caller(req) {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    if matches!(caller, Caller::Anonymous) && !public {
        return envelope::unauthorized(auth::UNAUTHORIZED);
    }
    let arg = percent_decode_str(arg).decode_utf8_lossy().into_owned();
    let Some(&Endpoint(_, method, _, handler)) =
        endpoint.filter(|e| (arg.is_empty() || e.takes_configuration()) && !arg.contains('/'))
    else {
        return not_found();
    };
    if req.method() != method {
        return answer(
            405,
            false,
            &Value::String("Method not allowed".into()),
            &Value::Null,
        )
        .with_header("allow", method);
    }
    let call = Call {
        req,
        caller: &caller,
        path_configuration: &arg,
    };
    handler(&call).unwrap_or_else(|e| envelope::from_error(&e))
}

fn not_found() -> Response {
    answer(404, false, &Value::String("Not found".into()), &Value::Null)
}

/// GET /api/handshake.
fn handshake(_: &Call) -> Result<Response, Error> {
    Ok(done())
}

fn str_field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

/// A whole number from a JSON number or a numeric string.
fn int_field(body: &Map<String, Value>, name: &str) -> Option<Result<i64, ()>> {
    match body.get(name)? {
        Value::Number(n) => Some(n.as_i64().ok_or(())),
        Value::String(s) => Some(s.trim().parse().map_err(|_| ())),
        Value::Null => None,
        _ => Some(Err(())),
    }
}

// ---------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------

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
fn get_configurations(call: &Call) -> Result<Response, Error> {
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
fn add_configuration(call: &Call) -> Result<Response, Error> {
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
fn toggle(call: &Call) -> Result<Response, Error> {
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
fn configuration_info(call: &Call) -> Result<Response, Error> {
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
        .after
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
fn delete_configuration(call: &Call) -> Result<Response, Error> {
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

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

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

fn bool_field(body: &Map<String, Value>, name: &str, default: bool) -> bool {
    body.get(name).and_then(Value::as_bool).unwrap_or(default)
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
fn add_peers(call: &Call) -> Result<Response, Error> {
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
fn delete_peers(call: &Call) -> Result<Response, Error> {
    change_peers(call, Change::Delete)
}

/// POST /api/restrictPeers/<configuration> {peers: [public keys]}.
fn restrict_peers(call: &Call) -> Result<Response, Error> {
    change_peers(call, Change::Restrict)
}

/// POST /api/allowAccessPeers/<configuration> {peers: [public keys]}.
fn allow_access_peers(call: &Call) -> Result<Response, Error> {
    change_peers(call, Change::Allow)
}

fn change_peers(call: &Call, change: Change) -> Result<Response, Error> {
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
fn update_peer(call: &Call) -> Result<Response, Error> {
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
fn reset_peer_data(call: &Call) -> Result<Response, Error> {
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

#[derive(Serialize)]
struct Download {
    file: String,
    #[serde(rename = "fileName")]
    file_name: String,
}

/// The original's file name: the peer's name without spaces (or
/// "UntitledPeer"), "_", the configuration's name; here reduced to
/// letters, digits, '_', '-' and '#' so that it is safe as a file name
/// everywhere.
fn file_name(peer: &str, conf: &str) -> String {
    let base: String = peer.chars().filter(|c| !c.is_whitespace()).collect();
    let base = if base.is_empty() {
        "UntitledPeer".to_string()
    } else {
        base
    };
    let mut name: String = format!("{base}_{conf}")
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '#'))
        .collect();
    for reserved in [
        "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8", "com9", "lpt1", "lpt2",
        "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9", "con", "nul", "prn",
    ] {
        name = name.replace(reserved, "");
    }
    if name.is_empty() {
        "UntitledPeer".into()
    } else {
        name
    }
}

/// The client's `.conf`, in the original's layout.
pub fn client_conf(conf: &Conf, p: &PeerRec, remote_endpoint: &str) -> String {
    let host = match remote_endpoint.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => remote_endpoint.to_string(),
    };
    let mut text = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {}\nMTU = {}\n\n",
        p.private_key, p.allowed_ip, p.mtu
    );
    if !p.dns.is_empty() {
        text.push_str(&format!("DNS = {}\n", p.dns));
    }
    text.push_str(&format!(
        "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\nEndpoint = {host}:{}\nPersistentKeepalive = {}\n",
        conf.public_key, p.endpoint_allowed_ip, conf.listen_port, p.keepalive
    ));
    if !p.preshared_key.is_empty() {
        text.push_str(&format!("PresharedKey = {}\n", p.preshared_key));
    }
    text
}

/// GET /api/downloadPeer/<configuration>?id= (or ?configurationName=&id=).
fn download_peer(call: &Call) -> Result<Response, Error> {
    let conf_name = call.configuration();
    let conf_name = conf_name.as_str();
    let id = call.query_key("id");
    let id = id.as_str();
    let Some(conf) = (if validate::is_name(conf_name) {
        store::conf(conf_name)?
    } else {
        None
    }) else {
        return Ok(fail("Configuration does not exist"));
    };
    let peer = if validate::is_key(id) {
        kv::get_json::<PeerRec>(&store::peer_key(&conf.name, id))?
    } else {
        None
    };
    let Some(peer) = peer else {
        return Ok(fail("Peer does not exist"));
    };
    let settings = store::settings()?;
    let remote = if valid_remote(&settings.remote_endpoint) {
        settings.remote_endpoint.as_str()
    } else {
        ""
    };
    Ok(ok(&Download {
        file: client_conf(&conf, &peer, remote),
        file_name: file_name(&peer.name, &conf.name),
    }))
}

/// The `remote_endpoint` setting goes into `.conf` text: an IP or a host name only.
fn valid_remote(text: &str) -> bool {
    text.parse::<std::net::IpAddr>().is_ok() || validate::is_hostname(text)
}

/// GET /api/getAvailableIPs/<configuration>: the first free addresses (at
/// most [`MAX_AVAILABLE`]); status false when there are none.
fn available_ips(call: &Call) -> Result<Response, Error> {
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
    fn every_endpoint_is_one_well_formed_line() {
        let mut names = HashSet::new();
        for e in ENDPOINTS {
            let name = e.name();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{}: a path is a name, plus {CONFIGURATION_SEGMENT} or nothing",
                e.0
            );
            assert!(names.insert(name), "{name} is listed twice");
            assert!(
                !e.1.is_empty() && e.1.chars().all(|c| c.is_ascii_uppercase()),
                "{name}: method {:?}",
                e.1
            );
        }
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name("My Phone", "wg0"), "MyPhone_wg0");
        assert_eq!(file_name("", "wg0"), "UntitledPeer_wg0");
        assert_eq!(file_name("../../etc/passwd", "wg0"), "etcpasswd_wg0");
        assert_eq!(
            file_name("BulkPeer #1_20250101_000000", "wg0"),
            "BulkPeer#1_20250101_000000_wg0"
        );
    }

    #[test]
    fn the_client_conf_has_the_originals_layout() {
        let conf = Conf {
            name: "wg0".into(),
            address: "10.0.0.1/24".into(),
            listen_port: 51820,
            private_key: "server-private".into(),
            public_key: "SERVERPUB".into(),
            preshared_key: String::new(),
            pre_up: String::new(),
            pre_down: String::new(),
            post_up: String::new(),
            post_down: String::new(),
        };
        let p = PeerRec {
            id: "CLIENTPUB".into(),
            private_key: "CLIENTPRIV".into(),
            preshared_key: "PSK".into(),
            allowed_ip: "10.0.0.2/32".into(),
            dns: "1.1.1.1".into(),
            endpoint_allowed_ip: "0.0.0.0/0".into(),
            mtu: 1420,
            keepalive: 21,
            ..PeerRec::default()
        };
        let text = client_conf(&conf, &p, "203.0.113.1");
        assert_eq!(
            text,
            "[Interface]\nPrivateKey = CLIENTPRIV\nAddress = 10.0.0.2/32\nMTU = 1420\n\nDNS = 1.1.1.1\n\n[Peer]\nPublicKey = SERVERPUB\nAllowedIPs = 0.0.0.0/0\nEndpoint = 203.0.113.1:51820\nPersistentKeepalive = 21\nPresharedKey = PSK\n"
        );
        assert!(!text.contains("server-private"));
        assert!(client_conf(&conf, &p, "2001:db8::1").contains("Endpoint = [2001:db8::1]:51820"));
    }

    #[test]
    fn stamps_are_compact() {
        assert_eq!(stamp(1_737_108_000), "20250117_100000");
    }
}
