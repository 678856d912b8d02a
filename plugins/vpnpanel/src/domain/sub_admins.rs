//! Sub-admins (resellers): the rules of their fields, creation with their
//! API key (returned once), edit, deletion cascading to their users,
//! reset_usage and key rotation. Ports are checked against every other
//! sub-admin in the transaction that writes, so two at once cannot share
//! one.

use serde_json::{Map, Value};
use wasmgate_sdk::{crypto, keys, kv};

use crate::domain::caller;
use crate::domain::{nodes, traffic, users};
use crate::fail::{Fail, refuse};
use crate::store::{self, users::SubAdmin, users::User};
use crate::util;
use crate::validate;

/// A sub-admin just created, with the secret of its key (in this answer
/// only).
pub struct Created {
    pub id: u64,
    pub username: String,
    pub api_key: String,
}

fn bad(m: &str) -> Fail {
    refuse(400, m)
}

/// Applies the editable fields of `body` to `sa`.
fn apply(body: &Map<String, Value>, sa: &mut SubAdmin) -> Result<(), Fail> {
    for (field, slot) in [
        ("subscription_port", &mut sa.subscription_port),
        ("panel_port", &mut sa.panel_port),
    ] {
        match body.get(field) {
            None => {}
            Some(Value::Null) => *slot = None,
            Some(v) => {
                let p = v.as_u64().filter(|p| (1..=65_535).contains(p));
                *slot = Some(p.ok_or_else(|| {
                    bad(&format!(
                        "Invalid {field}: expected a port from 1 to 65535."
                    ))
                })? as u16);
            }
        }
    }
    if sa.subscription_port.is_some() && sa.subscription_port == sa.panel_port {
        return Err(bad("subscription_port and panel_port must differ."));
    }
    if let Some(v) = body.get("max_users_limit").filter(|v| !v.is_null()) {
        sa.max_users_limit = v.as_u64().ok_or_else(|| {
            bad("Invalid max_users_limit: expected a whole number (0 is unlimited).")
        })?;
    }
    if let Some(v) = body.get("total_usage_quota_gb").filter(|v| !v.is_null()) {
        sa.total_usage_quota_gb = v
            .as_f64()
            .filter(|q| q.is_finite() && *q >= 0.0 && *q < 1e9)
            .ok_or_else(|| {
                bad("Invalid total_usage_quota_gb: expected a number (0 is unlimited).")
            })?;
    }
    if let Some(v) = body.get("is_active").filter(|v| !v.is_null()) {
        sa.is_active = v
            .as_bool()
            .ok_or_else(|| bad("Invalid is_active: expected true or false."))?;
    }
    match body.get("notes") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.chars().count() <= 1000 => sa.notes = s.clone(),
        Some(_) => return Err(bad("Invalid notes: a text of at most 1000 characters.")),
    }
    if let Some(v) = body.get("allowed_servers").filter(|v| !v.is_null()) {
        let list = v
            .as_array()
            .ok_or_else(|| bad("Invalid allowed_servers: expected a list."))?;
        sa.allowed_servers = list
            .iter()
            .map(|s| {
                s.as_str()
                    .filter(|s| validate::is_server_identifier(s))
                    .map(str::to_string)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                bad("Invalid allowed_servers: each entry is \"main\" or \"node_<id>\".")
            })?;
    }
    Ok(())
}

/// Whether another sub-admin among `others` (as the transaction read them)
/// has a port `sa` has.
fn port_taken(sa: &SubAdmin, others: &[SubAdmin]) -> bool {
    let mine = [sa.subscription_port, sa.panel_port];
    others.iter().filter(|o| o.id != sa.id).any(|o| {
        [o.subscription_port, o.panel_port]
            .iter()
            .any(|p| p.is_some() && mine.contains(p))
    })
}

/// When `body` names `allowed_servers`, each of them is a server that
/// exists as `txn` sees it (a node being deleted no longer is): a
/// sub-admin limited to a server nobody serves would hand it to its users.
/// A list already stored is not checked again on an edit that leaves it.
fn check_servers(txn: &kv::Txn, body: &Map<String, Value>, sa: &SubAdmin) -> Result<(), Fail> {
    if body.get("allowed_servers").is_none_or(Value::is_null) {
        return Ok(());
    }
    for server in &sa.allowed_servers {
        if !nodes::server_exists_in(txn, server)? {
            return Err(bad(&format!(
                "Invalid allowed_servers: there is no server {server}."
            )));
        }
    }
    Ok(())
}

const MSG_PORT_TAKEN: &str = "A port is already used by another sub-admin.";

const MSG_NAME_TAKEN: &str = "A sub-admin with this username already exists.";

pub fn create(body: &Map<String, Value>) -> Result<Created, Fail> {
    let username = body
        .get("username")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    let password = body.get("password").and_then(Value::as_str).unwrap_or("");
    if username.is_empty() || password.is_empty() {
        return Err(bad("Username and password are required."));
    }
    if !validate::is_valid_name(username) {
        return Err(bad(
            "Invalid username: 3 to 32 letters, digits, '_', '.' or '-'.",
        ));
    }
    let mut sa = SubAdmin {
        username: username.to_string(),
        is_active: true,
        created_at: util::now_secs(),
        ..SubAdmin::default()
    };
    apply(body, &mut sa)?;
    // Spares the password hash for a name that is taken; the transaction
    // below decides.
    if kv::get(&store::users::sa_name_key(username))?.is_some() {
        return Err(refuse(409, MSG_NAME_TAKEN));
    }
    sa.password_hash = crypto::password_hash(password);
    // The name, the servers and the ports are checked against what the
    // transaction reads, so two creations (or a creation and an edit) at
    // once cannot both take a port, and a node deleted meanwhile is seen.
    let id = store::transaction(|txn| {
        if txn.get(&store::users::sa_name_key(&sa.username))?.is_some() {
            return Err(refuse(409, MSG_NAME_TAKEN));
        }
        check_servers(txn, body, &sa)?;
        if port_taken(&sa, &store::users::sub_admins_in(txn)?) {
            return Err(refuse(409, MSG_PORT_TAKEN));
        }
        let id = txn.get_json::<u64>(store::users::SA_SEQ_KEY)?.unwrap_or(1);
        txn.set_json(store::users::SA_SEQ_KEY, &(id + 1))?;
        let mut rec = sa.clone();
        rec.id = id;
        txn.set_json(&store::users::sa_key(id), &rec)?;
        txn.set(
            &store::users::sa_name_key(&sa.username),
            id.to_string().as_bytes(),
        )?;
        Ok(id)
    })?;
    let issued = keys::issue(
        &caller::sub_admin_role(id),
        &format!("sub-admin {}", sa.username),
        None,
    )?;
    kv::transaction(|txn| {
        if let Some(mut rec) = txn.get_json::<SubAdmin>(&store::users::sa_key(id))? {
            rec.key_id = issued.info.id.clone();
            txn.set_json(&store::users::sa_key(id), &rec)?;
        }
        Ok(())
    })?;
    Ok(Created {
        id,
        username: sa.username,
        api_key: issued.secret,
    })
}

pub fn edit(id: u64, body: &Map<String, Value>) -> Result<SubAdmin, Fail> {
    store::transaction(|txn| {
        let mut sa: SubAdmin = txn
            .get_json(&store::users::sa_key(id))?
            .ok_or_else(|| refuse(404, "Sub-admin not found"))?;
        apply(body, &mut sa)?;
        check_servers(txn, body, &sa)?;
        if port_taken(&sa, &store::users::sub_admins_in(txn)?) {
            return Err(refuse(409, MSG_PORT_TAKEN));
        }
        txn.set_json(&store::users::sa_key(id), &sa)?;
        Ok(sa)
    })
}

/// Revokes its key, then deletes it and every user of it.
pub fn delete(id: u64) -> Result<(), Fail> {
    let sa = store::users::load_sub_admin(id)?.ok_or_else(|| refuse(404, "Sub-admin not found"))?;
    // The key first, then the record: a creation still in flight reads the
    // record in its transaction, so it either committed before (and its
    // users are listed below) or fails with "Sub-admin not found".
    if !sa.key_id.is_empty() {
        keys::revoke(&sa.key_id)?;
    }
    kv::transaction(|txn| {
        txn.delete(&store::users::sa_key(id))?;
        txn.delete(&store::users::sa_name_key(&sa.username))?;
        Ok(())
    })?;
    let mut doomed: Vec<(String, String)> = Vec::new();
    store::users::for_each_user(&format!("u/{}/", store::users::sub_owner(id)), |key, u| {
        doomed.push((key.to_string(), u.username));
        Ok(())
    })?;
    for chunk in doomed.chunks(10_000) {
        kv::transaction(|txn| {
            for (key, name) in chunk {
                users::drop_user(txn, key, name)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Zeroes its used traffic and brings back the users its quota stopped
/// and nothing else does: how many came back.
pub fn reset_usage(id: u64) -> Result<u64, Fail> {
    kv::transaction(|txn| {
        let mut sa: SubAdmin = txn
            .get_json(&store::users::sa_key(id))?
            .ok_or_else(|| wasmgate_sdk::Error::not_found("Sub-admin not found."))?;
        sa.used_bytes = 0;
        txn.set_json(&store::users::sa_key(id), &sa)?;
        Ok(())
    })
    .map_err(|e| {
        if e.status < 500 {
            refuse(e.status, &e.message)
        } else {
            Fail::from(e)
        }
    })?;
    // Users stopped because this sub-admin's quota ran out come back; a
    // user also limited by its own traffic, expired or disabled by hand
    // stays off and is not counted.
    let mut suspended = Vec::new();
    store::users::for_each_user(&format!("u/{}/", store::users::sub_owner(id)), |key, u| {
        if u.sa_suspended {
            suspended.push(key.to_string());
        }
        Ok(())
    })?;
    let mut re_enabled = 0u64;
    for key in suspended {
        let back = kv::transaction(|txn| {
            if traffic::over_quota_in(txn, id)? {
                return Ok(false);
            }
            let Some(mut u) = txn.get_json::<User>(&key)? else {
                return Ok(false);
            };
            let was = u.is_active();
            u.sa_suspended = false;
            store::users::put_user(txn, &key, &u)?;
            Ok(!was && u.is_active())
        })?;
        re_enabled += u64::from(back);
    }
    Ok(re_enabled)
}

/// A new key for sub-admin `id` (the old one is revoked): its secret.
pub fn rotate_key(id: u64) -> Result<String, Fail> {
    let sa = store::users::load_sub_admin(id)?.ok_or_else(|| refuse(404, "Sub-admin not found"))?;
    let issued = keys::issue(
        &caller::sub_admin_role(id),
        &format!("sub-admin {}", sa.username),
        None,
    )?;
    let old = kv::transaction(|txn| {
        let Some(mut rec) = txn.get_json::<SubAdmin>(&store::users::sa_key(id))? else {
            return Ok(None);
        };
        let old = std::mem::replace(&mut rec.key_id, issued.info.id.clone());
        txn.set_json(&store::users::sa_key(id), &rec)?;
        Ok(Some(old))
    })?;
    if let Some(old) = old.filter(|o| !o.is_empty()) {
        keys::revoke(&old)?;
    }
    Ok(issued.secret)
}
