//! Users and sub-admins: their records, keys and summaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmgate_sdk::kv;

use crate::fail::{self, Fail};
use crate::validate;

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
    /// ([`crate::domain::wg`]).
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

/// The kv owner segment of sub-admin `id`.
pub fn sub_owner(id: u64) -> String {
    format!("sa{id:010}")
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
        "expiry_date": u.expiry_at.map(validate::format_date),
    })
}

/// Writes user record `key` and its summary in `txn`.
pub fn put_user(txn: &kv::Txn, key: &str, u: &User) -> Result<(), wasmgate_sdk::Error> {
    txn.set_json(key, u)?;
    txn.set_json(&summary_key(key), &summary(u))
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

/// Every user under `prefix`, a page at a time so a large panel never holds
/// every stored value at once.
pub fn for_each_user(
    prefix: &str,
    mut f: impl FnMut(&str, User) -> Result<(), Fail>,
) -> Result<(), Fail> {
    super::scan(prefix, None, |key, bytes| {
        match serde_json::from_slice::<User>(&bytes) {
            Ok(u) => f(&key, u).map(|()| true),
            Err(e) => Err(fail::internal(format!("user record {key}: {e}"))),
        }
    })
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
