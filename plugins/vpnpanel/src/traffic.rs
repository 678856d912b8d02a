//! Traffic reports from the servers and the periodic enforcement job.
//!
//! `POST /api/v1/traffic/report`: a node (header `X-NODE-TOKEN`, its
//! `report_token`) or the main server (a main-admin `X-API-KEY`) reports per
//! user the bytes used since its last report and the active connections.
//! The first traffic of a flexible_days user starts its days. Users and
//! their sub-admins' counters change in one transaction; limits apply at
//! once. `GET /api/v1/traffic/users`: what a node serves.
//! `GET /api/v1/traffic/openvpn`: the calling server's OpenVPN material
//! (CA, its server certificate and key, the CRL).
//!
//! The job `vpnpanel.enforce` marks users expired or limited by time and
//! re-queues itself every `enforce_interval_secs` (default 60).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use wasmgate_sdk::{Request, config, kv, log};

use crate::common::{self, Caller, Reply};
use crate::fail::{self, Fail, refuse};
use crate::store::{self, users::SubAdmin, users::User};
use crate::util;

pub const JOB_ENFORCE: &str = "vpnpanel.enforce";
const ENFORCER: crate::sync::Periodic = crate::sync::Periodic {
    job: JOB_ENFORCE,
    next_key: store::meta::ENFORCE_NEXT_KEY,
};
/// Most entries in one report.
const MAX_ENTRIES: usize = 10_000;

/// Which server is calling: `main` for a main-admin key, `node_<id>` for a
/// node token.
fn reporter(req: &Request) -> Result<String, Fail> {
    if let Some(token) = req
        .header("x-node-token")
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        for (_, node) in kv::list_json::<Value>(store::nodes::REC_PREFIX)? {
            let known = node
                .get("report_token")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !known.is_empty()
                && util::secret_eq(known, token)
                && let Some(id) = node.get("id").and_then(Value::as_u64)
            {
                return Ok(format!("node_{id}"));
            }
        }
        return Err(refuse(401, "Invalid node token"));
    }
    match common::authenticate(req)? {
        Caller::Main => Ok("main".into()),
        Caller::Sub { .. } => Err(refuse(403, common::MSG_MAIN_REQUIRED)),
    }
}

pub fn route(req: &Request, rest: &[&str]) -> Reply {
    match (req.method(), rest) {
        ("POST", ["report"]) => report(req),
        ("GET", ["users"]) => node_users(req),
        ("GET", ["openvpn"]) => crate::pki::server_material(&reporter(req)?),
        _ => Ok(common::not_found_route()),
    }
}

fn report(req: &Request) -> Reply {
    let server = reporter(req)?;
    let body = common::json_object(req)?;
    let entries = body
        .get("users")
        .and_then(Value::as_array)
        .filter(|a| a.len() <= MAX_ENTRIES)
        .ok_or_else(|| {
            refuse(
                400,
                "Invalid users: expected a list of at most 10000 {username, bytes, connections}.",
            )
        })?;
    // username -> (bytes, connections)
    let mut deltas: BTreeMap<String, (u64, Option<u32>)> = BTreeMap::new();
    for e in entries {
        let name = e.get("username").and_then(Value::as_str);
        let bytes = e
            .get("bytes")
            .map_or(Some(0), Value::as_u64)
            .filter(|b| *b < 1 << 50);
        let conns = match e.get("connections") {
            None | Some(Value::Null) => Some(None),
            Some(v) => v.as_u64().filter(|c| *c <= 100_000).map(|c| Some(c as u32)),
        };
        let (Some(name), Some(bytes), Some(conns)) = (name, bytes, conns) else {
            return Err(refuse(
                400,
                "Invalid users: each entry is {username, bytes >= 0, connections >= 0}.",
            ));
        };
        let slot = deltas.entry(name.to_string()).or_insert((0, None));
        slot.0 += bytes;
        if conns.is_some() {
            slot.1 = conns;
        }
    }
    let accepted = record(&server, &deltas)?;
    Ok(common::ok_with(
        200,
        json!({ "message": "Traffic recorded.", "accepted": accepted }),
    ))
}

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
        for name in deltas.keys().filter(|n| crate::validate::is_valid_name(n)) {
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
        crate::nodes::add_traffic(id, total)?;
    }
    let suspended = !over_quota.is_empty();
    for id in over_quota {
        suspend_users_of(id)?;
    }
    if flipped || suspended {
        // Users that just ran out lose their WireGuard peers everywhere.
        crate::sync::changed();
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

/// The users a node serves: active users allowed on it, with what its
/// daemons need, and the IPsec PSK. Pages ([`common::paging`]) run in kv
/// key order; the cursor is the last user's key.
fn node_users(req: &Request) -> Reply {
    let server = reporter(req)?;
    let page = common::paging(req)?;
    let after = page.as_ref().and_then(|p| p.cursor.clone());
    if after.as_ref().is_some_and(|a| !a.starts_with("u/")) {
        return Err(common::bad_cursor());
    }
    // One more than the page: whether there is a next page.
    let want = page.as_ref().map_or(usize::MAX, |p| p.limit + 1);
    let mut users: Vec<(String, Value)> = Vec::new();
    store::scan("u/", after.as_deref(), |key, bytes| {
        let u: User = serde_json::from_slice(&bytes)
            .map_err(|e| fail::internal(format!("user record {key}: {e}")))?;
        if u.is_active() && u.may_use(&server) {
            users.push((
                key,
                json!({
                    "username": u.username,
                    "max_clients": u.max_clients,
                    "openvpn": u.enable_openvpn,
                    "l2tp_password": u.enable_l2tp.then_some(u.l2tp_password.clone()).flatten(),
                    "cisco_password": u.enable_cisco.then_some(u.cisco_password.clone()).flatten(),
                    "wg1": u.enable_wg1,
                    "wg_public_key": u.enable_wg1.then_some(u.wg_public_key.clone()).flatten(),
                    "wg_address": u.enable_wg1.then_some(u.wg_address.clone()).flatten(),
                }),
            ));
        }
        Ok(users.len() < want)
    })?;
    let psk = crate::settings::psk()?;
    let all = users.len();
    let render = |k: usize| {
        let mut answer = json!({
            "success": true,
            "server": server,
            "ipsec_psk": psk,
            "users": users[..k].iter().map(|(_, v)| v).collect::<Vec<_>>(),
        });
        if page.is_some() {
            // The key of the page's last user, when users follow it.
            let next = (k < all)
                .then(|| k.checked_sub(1).map(|i| users[i].0.clone()))
                .flatten();
            answer["next_cursor"] = json!(next);
        }
        answer.to_string().into_bytes()
    };
    let body = match &page {
        None => render(all),
        Some(p) => common::fitting(all.min(p.limit), render),
    };
    Ok(wasmgate_sdk::Response::bytes(200, "application/json", body))
}

fn interval() -> u64 {
    config::get("enforce_interval_secs")
        .and_then(|s| s.trim().parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60)
}

/// Starts the enforcement chain when none is due.
pub fn ensure_enforcer() -> Result<(), Fail> {
    Ok(ENFORCER.ensure(interval())?)
}

/// One pass: expiry and limits of every user, then this server's
/// WireGuard (its peers follow, its traffic is counted).
pub fn enforce_job(payload: &[u8]) -> Result<(), String> {
    ENFORCER.run(payload, interval(), || {
        let now = util::now_secs();
        let mut changed = Vec::new();
        store::users::for_each_user("u/", |key, mut u| {
            if u.enforce(now) {
                changed.push(key.to_string());
            }
            Ok(())
        })
        .map_err(|_| "listing users failed".to_string())?;
        for key in &changed {
            kv::transaction(|txn| {
                if let Some(mut u) = txn.get_json::<User>(key)? {
                    u.enforce(now);
                    store::users::put_user(txn, key, &u)?;
                }
                Ok(())
            })
            .map_err(|e| e.message)?;
        }
        log::write(
            log::Level::Info,
            &format!("vpnpanel: enforce pass changed {} user(s)", changed.len()),
        );
        if !changed.is_empty() {
            crate::sync::changed();
        } else if crate::wg::sync_main().is_err() {
            log::write(
                log::Level::Warn,
                "vpnpanel: the WireGuard sync of this server failed",
            );
        }
        Ok(())
    })
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
