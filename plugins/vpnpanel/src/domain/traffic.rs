//! Traffic and limits: what a server reports is added to its users (the
//! first traffic of a flexible_days user starts its days) and their
//! sub-admins' counters in one transaction, and limits apply at once; a
//! sub-admin whose quota is used up has its users suspended. The
//! enforcement chain ([`JOB_ENFORCE`], every `enforce_interval_secs`,
//! default 60) marks users expired or limited by time; its pass is
//! [`crate::domain::panel_jobs::enforce_job`].

use std::collections::BTreeMap;

use wasmgate_sdk::{config, kv};

use crate::domain::periodic::Periodic;
use crate::domain::{nodes, sync};
use crate::fail::Fail;
use crate::store::{self, users::SubAdmin, users::User};
use crate::util;
use crate::validate;

/// The enforcement pass.
pub const JOB_ENFORCE: &str = "vpnpanel.enforce";

pub const ENFORCER: Periodic = Periodic {
    job: JOB_ENFORCE,
    next_key: store::meta::ENFORCE_NEXT_KEY,
};

/// Adds `deltas` (username -> bytes, active connections) that `server`
/// measured: users and their sub-admins' counters in one transaction, limits
/// applied at once. Unknown names are skipped; the count of known ones is
/// returned.
pub fn record(server: &str, deltas: &BTreeMap<String, (u64, Option<u32>)>) -> Result<usize, Fail> {
    let now = util::now_secs();
    // Every read, the names' owners included, is in the transaction that
    // adds the bytes: a count made from an earlier read would overwrite
    // whatever was committed since, and those bytes would be lost.
    let (over_quota, flipped, known) = kv::transaction(|txn| {
        let mut sas: BTreeMap<u64, Option<SubAdmin>> = BTreeMap::new();
        let mut flipped = false;
        let mut known: Vec<&str> = Vec::new();
        for name in deltas.keys().filter(|n| validate::is_valid_name(n)) {
            let Some((key, mut u)) = store::users::user_in(txn, name)? else {
                continue;
            };
            known.push(name);
            let (bytes, conns) = deltas[name];
            let was_active = u.is_active();
            apply_report(&mut u, server, bytes, conns, now);
            flipped |= was_active != u.is_active();
            if let Some(id) = u.sub_admin_id {
                if let std::collections::btree_map::Entry::Vacant(slot) = sas.entry(id) {
                    slot.insert(txn.get_json(&store::users::sa_key(id))?);
                }
                if let Some(Some(sa)) = sas.get_mut(&id) {
                    sa.used_bytes = sa.used_bytes.saturating_add(bytes);
                }
            }
            store::users::put_user(txn, &key, &u)?;
        }
        let mut over = Vec::new();
        for (id, sa) in &sas {
            if let Some(sa) = sa {
                txn.set_json(&store::users::sa_key(*id), sa)?;
                if sa.quota_bytes().is_some_and(|q| sa.used_bytes >= q) {
                    over.push(*id);
                }
            }
        }
        Ok((over, flipped, known))
    })?;
    if let Some(id) = server.strip_prefix("node_").and_then(|n| n.parse().ok()) {
        // Only the known users' bytes: a report cannot inflate a node's
        // total with names nobody has.
        let total: u64 = known
            .iter()
            .map(|name| deltas[*name].0)
            .fold(0, u64::saturating_add);
        nodes::add_traffic(id, total)?;
    }
    let suspended = !over_quota.is_empty();
    for id in over_quota {
        suspend_users_of(id)?;
    }
    if flipped || suspended {
        // Users that just ran out lose their WireGuard peers everywhere.
        sync::changed();
    }
    let _ = ensure_enforcer();
    Ok(known.len())
}

/// One server's report for one user.
pub fn apply_report(u: &mut User, server: &str, bytes: u64, conns: Option<u32>, now: u64) {
    u.traffic_bytes = u.traffic_bytes.saturating_add(bytes);
    if bytes > 0 && u.activation_type == "flexible_days" && u.activated_at.is_none() {
        u.activated_at = Some(now);
        u.expiry_at = u
            .pending_activation_days
            .map(|d| now + u64::from(d) * 86_400);
    }
    if let Some(c) = conns {
        u.connections.insert(server.to_string(), (c, now));
    } else if bytes > 0 {
        let prev = u.connections.get(server).map_or(0, |(c, _)| *c);
        u.connections.insert(server.to_string(), (prev.max(1), now));
    }
    u.enforce(now);
}

/// Whether sub-admin `id`'s users are past its traffic quota, as `txn` sees
/// it. Suspending and un-suspending ask it in the transaction that changes
/// the users, so a reset_usage racing a report cannot leave users
/// suspended under a quota that was reset, or back under one used up.
pub fn over_quota_in(txn: &kv::Txn, id: u64) -> Result<bool, wasmgate_sdk::Error> {
    Ok(txn
        .get_json::<SubAdmin>(&store::users::sa_key(id))?
        .is_some_and(|sa| sa.quota_bytes().is_some_and(|q| sa.used_bytes >= q)))
}

/// Marks every user of sub-admin `id` suspended while its quota is used up.
fn suspend_users_of(id: u64) -> Result<(), Fail> {
    let mut keys = Vec::new();
    store::users::for_each_user(&format!("u/{}/", store::users::sub_owner(id)), |key, u| {
        if !u.sa_suspended {
            keys.push(key.to_string());
        }
        Ok(())
    })?;
    for chunk in keys.chunks(5_000) {
        let still_over = kv::transaction(|txn| {
            if !over_quota_in(txn, id)? {
                return Ok(false);
            }
            for key in chunk {
                if let Some(mut u) = txn.get_json::<User>(key)? {
                    u.sa_suspended = true;
                    store::users::put_user(txn, key, &u)?;
                }
            }
            Ok(true)
        })?;
        if !still_over {
            break;
        }
    }
    Ok(())
}

pub fn interval() -> u64 {
    config::get("enforce_interval_secs")
        .and_then(|s| s.trim().parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60)
}

/// Starts the enforcement chain when none is due.
pub fn ensure_enforcer() -> Result<(), Fail> {
    Ok(ENFORCER.ensure(interval())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flexible_days_start_at_the_first_report_with_bytes() {
        let mut u = User {
            enabled: true,
            activation_type: "flexible_days".into(),
            pending_activation_days: Some(30),
            ..User::default()
        };
        apply_report(&mut u, "main", 0, Some(1), 1_000);
        assert_eq!((u.activated_at, u.expiry_at), (None, None));
        apply_report(&mut u, "main", 10, None, 1_100);
        assert_eq!(
            (u.activated_at, u.expiry_at),
            (Some(1_100), Some(1_100 + 30 * 86_400))
        );
        apply_report(&mut u, "node_1", 10, None, 1_200);
        assert_eq!(u.activated_at, Some(1_100));
        assert_eq!(u.traffic_bytes, 20);
        assert_eq!(u.active_connections(1_200), 2);
    }
}
