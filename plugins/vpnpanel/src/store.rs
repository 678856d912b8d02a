//! Records and the kv layout of the core part.
//!
//! - `u/<owner>/<username>`: a [`User`]; `<owner>` is `main` or
//!   `sa<id:010>`, so one prefix lists one owner's users.
//! - `uname/<username>`: the owner segment of that user (names are unique
//!   across the panel).
//! - `ls/<owner>/<username>`: the user's list_all summary ([`put_user`]).
//! - `sa/<id:010>`: a [`SubAdmin`] with its counters (users, allocated and
//!   used bytes); every user creation, deletion and traffic report of its
//!   users updates it in the same transaction, so quotas hold under races.
//! - `saname/<username>`: the id of that sub-admin.
//! - `meta/next_sa_id`, `meta/ipsec_psk`, `meta/ca`: counters and settings.
//! - `cert/<username>`, `crl/<serial>`, `srvcert/<server>`: the PKI
//!   ([`crate::pki`]); `wgaddr/<ip>`, `wg/...`: WireGuard ([`crate::wg`]).
//!
//! Read-only here: `node/<id:010>` and `port/`, `assign/` records of the
//! infrastructure part ([`Server`] list of a user).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmgate_sdk::{config, kv};

use crate::common::Fail;

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct User {
    pub username: String,
    /// `main` or `sa<id:010>`.
    pub owner: String,
    pub sub_admin_id: Option<u64>,
    /// Switched by hand (toggle).
    pub enabled: bool,
    /// Used traffic reached the limit.
    pub limited: bool,
    /// The expiry passed.
    pub expired: bool,
    /// Its sub-admin's traffic quota is used up.
    pub sa_suspended: bool,
    pub max_clients: u32,
    /// As given, for display; None is unlimited.
    pub data_limit: Option<f64>,
    pub data_limit_unit: String,
    pub data_limit_bytes: Option<u64>,
    /// `fixed_date` or `flexible_days`.
    pub activation_type: String,
    /// Unix seconds; for flexible_days set at the first reported traffic.
    pub expiry_at: Option<u64>,
    pub pending_activation_days: Option<u32>,
    pub activated_at: Option<u64>,
    pub enable_openvpn: bool,
    pub enable_l2tp: bool,
    pub l2tp_password: Option<String>,
    pub enable_cisco: bool,
    pub cisco_password: Option<String>,
    pub enable_wg1: bool,
    /// WireGuard key pair and tunnel address, made when wg1 is first on
    /// ([`crate::wg`]).
    pub wg_private_key: Option<String>,
    pub wg_public_key: Option<String>,
    pub wg_address: Option<String>,
    /// Server identifiers (`main`, `node_<id>`); empty means every server.
    pub nodes: Vec<String>,
    pub notes: String,
    /// The subscription token; replaced by revoke.
    pub token: String,
    /// Bumped by revoke; the certificate job stamps `cert_issued`.
    pub cert_generation: u64,
    pub cert_issued: u64,
    pub traffic_bytes: u64,
    /// Per server: (active connections, unix second of the report).
    pub connections: BTreeMap<String, (u32, u64)>,
    pub created_at: u64,
}

/// A report older than this no longer counts as online.
pub const ONLINE_WINDOW_SECS: u64 = 300;

impl User {
    pub fn is_active(&self) -> bool {
        self.enabled && !self.limited && !self.expired && !self.sa_suspended
    }

    pub fn active_connections(&self, now: u64) -> u32 {
        self.connections
            .values()
            .filter(|(_, at)| now.saturating_sub(*at) <= ONLINE_WINDOW_SECS)
            .map(|(n, _)| *n)
            .sum()
    }

    /// Applies the limit and expiry rules at `now`; true when a flag changed.
    pub fn enforce(&mut self, now: u64) -> bool {
        let limited = self
            .data_limit_bytes
            .is_some_and(|l| self.traffic_bytes >= l);
        let expired = self.expiry_at.is_some_and(|e| now > e);
        let changed = limited != self.limited || expired != self.expired;
        self.limited = limited;
        self.expired = expired;
        changed
    }

    pub fn status(&self) -> &'static str {
        if !self.enabled {
            "disabled"
        } else if self.expired {
            "expired"
        } else if self.limited {
            "limited"
        } else if self.sa_suspended {
            "suspended"
        } else if self.activation_type == "flexible_days" && self.activated_at.is_none() {
            "pending_activation"
        } else {
            "active"
        }
    }

    pub fn may_use(&self, server: &str) -> bool {
        self.nodes.is_empty() || self.nodes.iter().any(|n| n == server)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct SubAdmin {
    pub id: u64,
    pub username: String,
    pub password_hash: String,
    pub subscription_port: Option<u16>,
    pub panel_port: Option<u16>,
    /// 0 is unlimited.
    pub max_users_limit: u64,
    /// 0 is unlimited.
    pub total_usage_quota_gb: f64,
    pub is_active: bool,
    pub notes: String,
    pub allowed_servers: Vec<String>,
    pub key_id: String,
    pub users_count: u64,
    /// Sum of the data limits of its users.
    pub allocated_bytes: u64,
    /// Traffic its users used since the last reset_usage.
    pub used_bytes: u64,
    pub created_at: u64,
}

impl SubAdmin {
    pub fn quota_bytes(&self) -> Option<u64> {
        (self.total_usage_quota_gb > 0.0)
            .then_some((self.total_usage_quota_gb * (1u64 << 30) as f64) as u64)
    }
}

pub fn user_key(owner: &str, username: &str) -> String {
    format!("u/{owner}/{username}")
}

pub fn name_key(username: &str) -> String {
    format!("uname/{username}")
}

pub fn sa_key(id: u64) -> String {
    format!("sa/{id:010}")
}

pub fn sa_name_key(username: &str) -> String {
    format!("saname/{username}")
}

/// The kv key of the list_all summary of the user at `user_key`:
/// `ls/<owner>/<username>`, kept beside the record so that list_all joins
/// stored bytes instead of parsing every record.
pub fn summary_key(user_key: &str) -> String {
    format!("ls/{}", user_key.strip_prefix("u/").unwrap_or(user_key))
}

/// The short form of a user in list_all.
pub fn summary(u: &User) -> serde_json::Value {
    serde_json::json!({
        "username": u.username,
        "is_active": u.is_active(),
        "status": u.status(),
        "total_traffic_bytes": u.traffic_bytes,
        "data_limit_bytes": u.data_limit_bytes,
        "expiry_date": u.expiry_at.map(crate::validate::format_date),
    })
}

/// Writes user record `key` and its summary in `txn`.
pub fn put_user(txn: &kv::Txn, key: &str, u: &User) -> Result<(), wasmgate_sdk::Error> {
    txn.set_json(key, u)?;
    txn.set_json(&summary_key(key), &summary(u))
}

/// Deletes user record `key`, its summary, its name and its WireGuard
/// address, and puts its certificate on the CRL, in `txn`.
pub fn drop_user(txn: &kv::Txn, key: &str, username: &str) -> Result<(), wasmgate_sdk::Error> {
    if let Some(address) = txn.get_json::<User>(key)?.and_then(|u| u.wg_address) {
        txn.delete(&crate::wg::addr_key(&address))?;
    }
    crate::pki::revoke_in(txn, username)?;
    txn.delete(key)?;
    txn.delete(&summary_key(key))?;
    txn.delete(&name_key(username))
}

/// The user `username` and its kv key as `txn` sees them, if it exists.
/// The name's owner is read in `txn` too, so a user deleted and created
/// again under another owner meanwhile is a conflict, not a stale key.
pub fn user_in(
    txn: &kv::Txn,
    username: &str,
) -> Result<Option<(String, User)>, wasmgate_sdk::Error> {
    let Some(owner) = txn.get(&name_key(username))? else {
        return Ok(None);
    };
    let key = user_key(&String::from_utf8_lossy(&owner), username);
    Ok(txn.get_json::<User>(&key)?.map(|u| (key, u)))
}

/// The entries under `prefix` after key `after` (exclusive), in key order,
/// a host page at a time, while `f` returns true.
pub fn scan(
    prefix: &str,
    after: Option<&str>,
    mut f: impl FnMut(String, Vec<u8>) -> Result<bool, Fail>,
) -> Result<(), Fail> {
    use wasmgate_sdk::bindings::wasmgate::plugin::kv as raw;
    let mut cursor = after.map(str::to_string);
    loop {
        let page = raw::list(prefix, cursor.as_deref(), 1000).map_err(wasmgate_sdk::Error::from)?;
        for (key, bytes) in page.entries {
            if !f(key, bytes)? {
                return Ok(());
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// The user `username` and its kv key, if it exists.
pub fn load_user(username: &str) -> Result<Option<(String, User)>, Fail> {
    let Some(owner) = kv::get(&name_key(username))? else {
        return Ok(None);
    };
    let owner = String::from_utf8_lossy(&owner).into_owned();
    let key = user_key(&owner, username);
    Ok(kv::get_json::<User>(&key)?.map(|u| (key, u)))
}

pub fn load_sub_admin(id: u64) -> Result<Option<SubAdmin>, Fail> {
    Ok(kv::get_json(&sa_key(id))?)
}

/// The kv key of the next sub-admin id; only a creation writes it.
pub const SA_SEQ_KEY: &str = "meta/next_sa_id";

/// Every sub-admin as `txn` sees it, for a check that must hold against all
/// of them when `txn` commits (two sub-admins never share a port). The id
/// sequence is read in `txn` before the records are listed, so a sub-admin
/// created after that read makes the commit conflict, and one created before
/// it is in the listing; each listed record is then read in `txn`, so a
/// change to any of them (or its deletion) conflicts too.
pub fn sub_admins_in(txn: &kv::Txn) -> Result<Vec<SubAdmin>, wasmgate_sdk::Error> {
    txn.get(SA_SEQ_KEY)?;
    let mut out = Vec::new();
    for (key, _) in kv::list("sa/")? {
        if let Some(sa) = txn.get_json::<SubAdmin>(&key)? {
            out.push(sa);
        }
    }
    Ok(out)
}

pub fn all_sub_admins() -> Result<Vec<SubAdmin>, Fail> {
    Ok(kv::list_json::<SubAdmin>("sa/")?
        .into_iter()
        .map(|(_, s)| s)
        .collect())
}

/// One OpenVPN endpoint a user may connect to.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// `main_udp`, `node_1_tcp_443`: the profile's file name without `.ovpn`.
    pub name: String,
    /// `main` or `node_<id>`.
    pub server: String,
    pub server_name: String,
    pub host: String,
    pub port: u16,
    /// `udp` or `tcp`.
    pub protocol: String,
}

/// A server: the main one or an active node.
#[derive(Clone, Debug)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub protocol: String,
    /// Its WireGuard public key and port, when it runs WireGuard.
    pub wireguard: Option<(String, u16)>,
}

fn proto(s: Option<&str>) -> String {
    match s.map(str::to_ascii_lowercase).as_deref() {
        Some("tcp") => "tcp".into(),
        _ => "udp".into(),
    }
}

/// The main server and every node whose status is `active`.
pub fn servers() -> Result<Vec<Server>, Fail> {
    let mut out = vec![Server {
        id: "main".into(),
        name: "Main Server".into(),
        host: config::get("server_address").unwrap_or_else(|| "127.0.0.1".into()),
        port: config::get("openvpn_port")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(1194),
        protocol: proto(config::get("openvpn_protocol").as_deref()),
        wireguard: wireguard_of(&crate::wg::server_info()?),
    }];
    for (_, node) in kv::list_json::<Value>("node/")? {
        if node.get("status").and_then(Value::as_str) != Some("active") {
            continue;
        }
        let (Some(id), Some(host)) = (
            node.get("id").and_then(Value::as_u64),
            node.get("ip_address").and_then(Value::as_str),
        ) else {
            continue;
        };
        out.push(Server {
            id: format!("node_{id}"),
            name: format!(
                "Node: {}",
                node.get("name").and_then(Value::as_str).unwrap_or("")
            ),
            host: host.to_string(),
            port: node
                .get("openvpn_port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(1194),
            protocol: proto(node.get("protocol").and_then(Value::as_str)),
            wireguard: node.get("wireguard").and_then(wireguard_of),
        });
    }
    Ok(out)
}

/// `{public_key, port}` as a server reports its WireGuard.
fn wireguard_of(v: &Value) -> Option<(String, u16)> {
    let key = v.get("public_key")?.as_str()?.to_string();
    let port = u16::try_from(v.get("port")?.as_u64()?).ok()?;
    Some((key, port))
}

/// The OpenVPN endpoints of `user`: the default port of every server it may
/// use, then the custom ports assigned to those servers.
pub fn endpoints(user: &User) -> Result<Vec<Endpoint>, Fail> {
    let servers: Vec<Server> = servers()?
        .into_iter()
        .filter(|s| user.may_use(&s.id))
        .collect();
    let mut out: Vec<Endpoint> = servers
        .iter()
        .map(|s| Endpoint {
            name: format!("{}_{}", s.id, s.protocol),
            server: s.id.clone(),
            server_name: s.name.clone(),
            host: s.host.clone(),
            port: s.port,
            protocol: s.protocol.clone(),
        })
        .collect();
    let ports: BTreeMap<String, Value> = kv::list_json::<Value>("port/")?.into_iter().collect();
    for (key, _) in kv::list("assign/")? {
        let mut parts = key.trim_start_matches("assign/").splitn(2, '/');
        let (Some(port_id), Some(server_id)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(server) = servers.iter().find(|s| s.id == server_id) else {
            continue;
        };
        let Some(port) = ports.get(&format!("port/{port_id}")) else {
            continue;
        };
        let Some(public_port) = port
            .get("public_port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        let protocol = proto(port.get("protocol").and_then(Value::as_str));
        let name = format!("{}_{}_{}", server.id, protocol, public_port);
        if out
            .iter()
            .any(|e| e.server == server.id && e.port == public_port && e.protocol == protocol)
        {
            continue;
        }
        out.push(Endpoint {
            name,
            server: server.id.clone(),
            server_name: server.name.clone(),
            host: server.host.clone(),
            port: public_port,
            protocol,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            enabled: true,
            activation_type: "fixed_date".into(),
            ..User::default()
        }
    }

    #[test]
    fn a_user_is_limited_at_its_limit_and_expired_after_its_expiry() {
        let mut u = user();
        u.data_limit_bytes = Some(100);
        u.expiry_at = Some(1_000);
        u.traffic_bytes = 99;
        assert!(!u.enforce(500));
        assert!(u.is_active());
        u.traffic_bytes = 100;
        assert!(u.enforce(500));
        assert_eq!((u.limited, u.status()), (true, "limited"));
        assert!(u.enforce(1_001));
        assert_eq!((u.expired, u.status()), (true, "expired"));
        // A disabled user reports "disabled" whatever else is true.
        u.enabled = false;
        assert_eq!(u.status(), "disabled");
    }

    #[test]
    fn online_counts_only_recent_reports() {
        let mut u = user();
        u.connections.insert("main".into(), (2, 1_000));
        u.connections
            .insert("node_1".into(), (1, 1_000 - ONLINE_WINDOW_SECS - 1));
        assert_eq!(u.active_connections(1_000), 2);
        assert_eq!(u.active_connections(1_000 + ONLINE_WINDOW_SECS + 1), 0);
    }

    #[test]
    fn summary_keys_mirror_user_keys() {
        assert_eq!(
            summary_key(&user_key("sa0000000001", "bob")),
            "ls/sa0000000001/bob"
        );
    }
}
