//! What the plugin keeps in kv, and the key layout:
//!
//! | key | value |
//! | --- | --- |
//! | `instance_id` | this panel's instance id, made once when the `instance_id` setting is absent |
//! | `clock/last_seen` | the latest Unix time the panel has seen, to notice a clock set back |
//! | `license/current` | [`StoredLicense`]: the activated key and the signed file, byte for byte |
//! | `seq/<kind>` | the last resource id of a kind |
//! | `res/<kind>/<id:016>` | [`Resource`]: an account, domain or database the license counts |
//! | `disabled/<kind>/<id:016>` | [`Resource`]: the same resource while `enforce` keeps it disabled |
//! | `update/state` | [`crate::update::UpdateState`] |
//! | `update/blob/<blob id>/<n:04>` | an artefact in chunks of [`crate::update::CHUNK`] bytes; `update/state` names the staged one's blob id (releases before blob ids kept one at `update/blob/<n:04>`) |

use serde::{Deserialize, Serialize};
use wasmgate_sdk::{config, crypto, kv};

use crate::api::ApiError;

/// The kinds of resources a license limits, with the limit that counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Accounts,
    Domains,
    Databases,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Accounts, Kind::Domains, Kind::Databases];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Accounts => "accounts",
            Kind::Domains => "domains",
            Kind::Databases => "databases",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The license limit that applies to this kind.
    pub fn limit(self, limits: &crate::license::Limits) -> i64 {
        match self {
            Kind::Accounts => limits.max_users,
            Kind::Domains => limits.max_domains,
            Kind::Databases => limits.max_databases,
        }
    }
}

/// An account, domain or database, as the panel's other parts register it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: Kind,
    pub id: u64,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    pub disabled: bool,
    /// Unix seconds; set while disabled.
    pub disabled_at: Option<i64>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
}

pub fn res_key(kind: Kind, id: u64) -> String {
    format!("res/{}/{id:016}", kind.as_str())
}

pub fn disabled_key(kind: Kind, id: u64) -> String {
    format!("disabled/{}/{id:016}", kind.as_str())
}

/// The activated license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLicense {
    /// The full key as activated.
    pub key: String,
    /// The signed license file (the portal's envelope), exactly as verified.
    pub file: String,
    /// Unix seconds.
    pub activated_at: i64,
    /// Unix seconds of the last successful check with the portal.
    pub last_checked: Option<i64>,
    /// The portal said the key was revoked.
    #[serde(default)]
    pub revoked: bool,
}

pub const LICENSE: &str = "license/current";
pub const LAST_SEEN: &str = "clock/last_seen";

pub fn license() -> Result<Option<StoredLicense>, ApiError> {
    Ok(kv::get_json(LICENSE)?)
}

/// Stores the verified `file` for `key` (`now`: when it was verified;
/// `checked_with_portal`: the portal issued it just now), in one
/// transaction with the read of what it replaces: the activation time and
/// the last portal check carry over from a record of the same key as it is
/// when this commits, never from one read earlier or from another key's.
pub fn install_license(
    key: &str,
    file: &str,
    now: i64,
    checked_with_portal: bool,
) -> Result<(), ApiError> {
    Ok(kv::transaction(|txn| {
        let previous: Option<StoredLicense> = txn.get_json(LICENSE)?;
        let same = previous.filter(|p| p.key == key);
        let last_checked = same.as_ref().and_then(|p| p.last_checked);
        txn.set_json(
            LICENSE,
            &StoredLicense {
                key: key.to_string(),
                file: file.to_string(),
                activated_at: same.as_ref().map_or(now, |p| p.activated_at),
                last_checked: if checked_with_portal {
                    last_checked.max(Some(now))
                } else {
                    last_checked
                },
                revoked: false,
            },
        )
    })?)
}

/// Applies `f` to the stored license if it is (still) the one of `key`,
/// reading and writing it in one transaction: a change decided from what a
/// request read earlier (before a portal call) lands on the record as it is
/// now, and never on a license another request activated meanwhile. Returns
/// whether it applied.
pub fn change_license(key: &str, f: impl Fn(&mut StoredLicense)) -> Result<bool, ApiError> {
    Ok(kv::transaction(|txn| {
        let Some(mut current) = txn.get_json::<StoredLicense>(LICENSE)? else {
            return Ok(false);
        };
        if current.key != key {
            return Ok(false);
        }
        f(&mut current);
        txn.set_json(LICENSE, &current)?;
        Ok(true)
    })?)
}

/// This panel's instance id: the `instance_id` setting, or one made from 8
/// random bytes at first use and kept in kv.
pub fn instance_id() -> Result<String, ApiError> {
    if let Some(id) = config::get("instance_id")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    {
        return Ok(id);
    }
    if let Some(id) = kv::get_json::<String>("instance_id")? {
        return Ok(id);
    }
    let fresh = crypto::hex(&crypto::random_bytes(8));
    // Two first requests at once: one id wins and both use it.
    Ok(kv::transaction(|txn| {
        match txn.get_json::<String>("instance_id")? {
            Some(id) => Ok(id),
            None => {
                txn.set_json("instance_id", &fresh)?;
                Ok(fresh.clone())
            }
        }
    })?)
}

/// The latest time seen before this call, and records `now` when it is
/// later (by at least a minute, to keep writes rare). The high-water mark
/// never moves back.
pub fn observe_clock(now: i64) -> Result<Option<i64>, ApiError> {
    let seen: Option<i64> = kv::get_json(LAST_SEEN)?;
    if seen.is_none_or(|s| now >= s + 60) {
        kv::transaction(|txn| {
            let cur: Option<i64> = txn.get_json(LAST_SEEN)?;
            if cur.is_none_or(|c| now > c) {
                txn.set_json(LAST_SEEN, &now)?;
            }
            Ok(())
        })?;
    }
    Ok(seen)
}

/// Every resource of `kind`, oldest first.
pub fn resources(kind: Kind) -> Result<Vec<Resource>, ApiError> {
    Ok(
        kv::list_json::<Resource>(&format!("res/{}/", kind.as_str()))?
            .into_iter()
            .map(|(_, r)| r)
            .collect(),
    )
}

/// Every resource of `kind` as `txn` sees it, oldest first, for a decision
/// that must hold when `txn` commits (how many to disable or restore). The
/// kind's id sequence is read in `txn` before the records are listed, so a
/// resource added after that read makes the commit conflict, and one added
/// before it is in the listing; each listed record is then read in `txn`,
/// so a change to any of them (or its removal) conflicts too.
pub fn resources_in(txn: &kv::Txn, kind: Kind) -> Result<Vec<Resource>, wasmgate_sdk::Error> {
    txn.get(&seq_key(kind))?;
    let mut out = Vec::new();
    for (key, _) in kv::list(&format!("res/{}/", kind.as_str()))? {
        if let Some(r) = txn.get_json::<Resource>(&key)? {
            out.push(r);
        }
    }
    Ok(out)
}

fn seq_key(kind: Kind) -> String {
    format!("seq/{}", kind.as_str())
}

pub const DISABLED_PREFIX: &str = "disabled/";

/// How many resources are disabled.
pub fn disabled_count() -> Result<u64, ApiError> {
    Ok(kv::count(DISABLED_PREFIX)?)
}

/// The key prefix of the resources of `kind`.
pub fn res_prefix(kind: Kind) -> String {
    format!("res/{}/", kind.as_str())
}

/// How many resources of `kind` exist, disabled or not.
pub fn count(kind: Kind) -> Result<u64, ApiError> {
    Ok(kv::count(&format!("res/{}/", kind.as_str()))?)
}

/// Every disabled resource, by kind then age.
pub fn disabled() -> Result<Vec<Resource>, ApiError> {
    Ok(kv::list_json::<Resource>("disabled/")?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// The most keys one kv transaction may write: the host's limit (its
/// `MAX_TXN_WRITES`). Its byte limit (64 MiB) is far off: a record
/// `PUT /usage` adds is under 200 bytes with its key, and a removal
/// buffers only its key.
pub const MAX_TXN_KEYS: u64 = 100_000;

/// What one request changes writes more keys than one transaction may.
fn too_many_keys(keys: u64) -> ApiError {
    ApiError::validation(format!(
        "this change writes {keys} keys (one per resource added or removed, \
         two per disabled one removed, one per kind added to) and one request \
         writes at most {MAX_TXN_KEYS}: make it in smaller steps"
    ))
}

/// Adds `names.len()` resources of `kind` in one transaction (at most
/// [`MAX_TXN_KEYS`] - 1: the kind's id sequence is written too).
pub fn add_resources(kind: Kind, names: &[String], now: i64) -> Result<Vec<Resource>, ApiError> {
    let keys = names.len() as u64 + 1;
    if keys > MAX_TXN_KEYS {
        return Err(too_many_keys(keys));
    }
    Ok(kv::transaction(|txn| add_in(txn, kind, names, now))?)
}

/// Adds `names.len()` resources of `kind` in `txn`, numbered on from the
/// kind's id sequence as `txn` reads it.
fn add_in(
    txn: &kv::Txn,
    kind: Kind,
    names: &[String],
    now: i64,
) -> Result<Vec<Resource>, wasmgate_sdk::Error> {
    let seq_key = seq_key(kind);
    let mut seq: u64 = txn.get_json(&seq_key)?.unwrap_or(0);
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        seq += 1;
        let r = Resource {
            kind,
            id: seq,
            name: name.clone(),
            created_at: now,
            disabled: false,
            disabled_at: None,
            disabled_reason: None,
        };
        txn.set_json(&res_key(kind, seq), &r)?;
        out.push(r);
    }
    txn.set_json(&seq_key, &seq)?;
    Ok(out)
}

/// Brings each kind of `wants` to its count, in one transaction: adds
/// resources named `<kind>-<n>` (n from the count plus one) or removes the
/// newest, with their disabled records. How many to add or remove is
/// decided from the resources as that transaction reads them
/// ([`resources_in`]), so requests at once end as if made one after the
/// other, whichever kinds they set. A change that would write more than
/// [`MAX_TXN_KEYS`] keys is refused (VALIDATION_ERROR, naming how many)
/// before anything is written.
pub fn set_counts(wants: &[(Kind, u64)], now: i64) -> Result<(), ApiError> {
    enum Change {
        /// The counts to add, `first..=last`.
        Add(u64, u64),
        /// The ids to remove, with whether each has a disabled record.
        Remove(Vec<(u64, bool)>),
    }
    kv::transaction(|txn| {
        let mut changes = Vec::new();
        let mut keys = 0u64;
        for &(kind, want) in wants {
            let have = resources_in(txn, kind)?;
            let n = have.len() as u64;
            if want > n {
                keys += want - n + 1;
                changes.push((kind, Change::Add(n + 1, want)));
            } else if want < n {
                let mut gone = Vec::new();
                for r in have.iter().rev().take((n - want) as usize) {
                    let disabled = txn.get(&disabled_key(kind, r.id))?.is_some();
                    keys += 1 + u64::from(disabled);
                    gone.push((r.id, disabled));
                }
                changes.push((kind, Change::Remove(gone)));
            }
        }
        if keys > MAX_TXN_KEYS {
            return Ok(Err(too_many_keys(keys)));
        }
        for (kind, change) in changes {
            match change {
                Change::Add(first, last) => {
                    let names: Vec<String> = (first..=last)
                        .map(|i| format!("{}-{i}", kind.as_str()))
                        .collect();
                    add_in(txn, kind, &names, now)?;
                }
                Change::Remove(gone) => {
                    for (id, disabled) in gone {
                        txn.delete(&res_key(kind, id))?;
                        if disabled {
                            txn.delete(&disabled_key(kind, id))?;
                        }
                    }
                }
            }
        }
        Ok(Ok(()))
    })?
}

/// Removes a resource (and its disabled record); returns whether it existed.
pub fn remove_resource(kind: Kind, id: u64) -> Result<bool, ApiError> {
    Ok(kv::transaction(|txn| {
        let existed = txn.get(&res_key(kind, id))?.is_some();
        txn.delete(&res_key(kind, id))?;
        txn.delete(&disabled_key(kind, id))?;
        Ok(existed)
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_more_than_one_transaction_writes_is_refused_before_kv() {
        let names = vec![String::new(); MAX_TXN_KEYS as usize];
        let e = add_resources(Kind::Accounts, &names, 0).unwrap_err();
        assert_eq!((e.status, e.code), (400, "VALIDATION_ERROR"));
        assert!(e.message.contains("100001 keys"), "{}", e.message);
    }
}
