//! Users: which ones a caller may see, the rules of a user's fields,
//! creation (single and bulk, one transaction with the sub-admin's
//! counters), edit, toggle, revoke and its certificate job, reset_traffic
//! and deletion.
//!
//! A change reads the user in the transaction that writes it
//! (`find_in`), so it never writes back a copy that misses what was
//! committed meanwhile.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Map, Value, json};
use wasmgate_sdk::{crypto, jobs, kv};

use crate::domain::caller::Caller;
use crate::domain::{nodes, pki, wg};
use crate::fail::{Fail, refuse};
use crate::store::{self, users::SubAdmin, users::User};
use crate::util;
use crate::validate;

/// The background half of revoke ([`cert_job`]).
pub const JOB_CERT: &str = "vpnpanel.cert";
pub const MSG_USER_NOT_FOUND: &str = "User not found or permission denied";

/// The largest `bulk_count`.
pub const MAX_BULK: u64 = 10_000;

/// The user `name` if the caller may see it; else 404 with `message`. For
/// answers only: a change reads the user with `find_in`.
pub fn find(caller: &Caller, name: &str, message: &str) -> Result<(String, User), Fail> {
    if !validate::is_valid_name(name) {
        return Err(refuse(404, message));
    }
    match store::users::load_user(name)? {
        Some((key, user)) if caller.is_main() || user.owner == caller.owner() => Ok((key, user)),
        _ => Err(refuse(404, message)),
    }
}

/// [`find`] inside `txn`: a change must start from the user as its own
/// transaction read it, or it writes back a copy that misses whatever was
/// committed in between (a revoke's token, a toggle, reported traffic).
fn find_in(
    txn: &kv::Txn,
    caller: &Caller,
    name: &str,
    message: &str,
) -> Result<(String, User), Fail> {
    if !validate::is_valid_name(name) {
        return Err(refuse(404, message));
    }
    match store::users::user_in(txn, name)? {
        Some((key, user)) if caller.is_main() || user.owner == caller.owner() => Ok((key, user)),
        _ => Err(refuse(404, message)),
    }
}

/// The servers `body` names in `nodes` (or the legacy `allowed_nodes`)
/// all exist as `txn` sees them: a user put on a server that is not there
/// would be served by nobody. Only the servers the caller named are
/// checked, after [`restrict_nodes`], so a sub-admin learns nothing about
/// servers outside its `allowed_servers`.
fn check_servers(txn: &kv::Txn, body: &Map<String, Value>) -> Result<(), Fail> {
    let given = body
        .get("nodes")
        .or_else(|| body.get("allowed_nodes"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for server in given.iter().filter_map(Value::as_str) {
        if !nodes::server_exists_in(txn, server)? {
            return Err(bad(&format!("Invalid nodes: there is no server {server}.")));
        }
    }
    Ok(())
}

fn bad(message: &str) -> Fail {
    refuse(400, message)
}

fn get_bool(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, Fail> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(&format!(
            "Invalid value for {field}: expected true or false."
        ))),
    }
}

fn get_uint(
    body: &Map<String, Value>,
    field: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, Fail> {
    let v = match body.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().parse().ok(),
        Some(_) => None,
    };
    match v {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(bad(&format!(
            "Invalid value for {field}: expected a whole number from {min} to {max}."
        ))),
    }
}

fn get_secret(body: &Map<String, Value>, field: &str) -> Result<Option<String>, Fail> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if validate::is_safe_secret(s) => Ok(Some(s.clone())),
        Some(_) => Err(bad(&format!(
            "Invalid {field}: 1 to 128 characters without quotes, backslashes or control characters."
        ))),
    }
}

/// Applies the fields of `body` to `user` (creation starts from defaults,
/// an edit from the stored user), validating each. Unknown fields are
/// ignored, as the original's form-like update does.
pub fn apply(
    body: &Map<String, Value>,
    user: &mut User,
    now: u64,
    creating: bool,
) -> Result<(), Fail> {
    if let Some(n) = get_uint(body, "max_clients", 1, 1000)? {
        user.max_clients = n as u32;
    }
    if let Some(unit) = body.get("data_limit_unit").filter(|v| !v.is_null()) {
        let unit = unit.as_str().filter(|u| validate::unit_bytes(u).is_some());
        let unit = unit.ok_or_else(|| bad("Invalid data_limit_unit: expected MB, GB or TB."))?;
        user.data_limit_unit = unit.to_ascii_uppercase();
    }
    if let Some(v) = body.get("data_limit") {
        // A number or a numeric string is a limit (0 is unlimited); anything
        // else (null, "unlimited", "") means unlimited, as in the original.
        let limit = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        };
        if limit.is_some_and(|l| l < 0.0) {
            return Err(bad("Invalid data_limit: must not be negative."));
        }
        user.data_limit = limit.filter(|l| *l > 0.0);
    }
    user.data_limit_bytes = match user.data_limit {
        Some(l) => Some(
            validate::limit_bytes(l, &user.data_limit_unit)
                .ok_or_else(|| bad("Invalid data_limit: too large."))?,
        ),
        None => None,
    };

    if let Some(t) = body.get("activation_type").filter(|v| !v.is_null()) {
        match t.as_str() {
            Some(t @ ("fixed_date" | "flexible_days")) => user.activation_type = t.to_string(),
            _ => {
                return Err(bad(
                    "Invalid activation_type: expected fixed_date or flexible_days.",
                ));
            }
        }
    }
    let date = match body.get("expiry_date_str") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => Some(None),
        Some(Value::String(s)) => Some(Some(
            validate::parse_date_end(s.trim())
                .ok_or_else(|| bad("Invalid expiry_date_str: expected YYYY-MM-DD."))?,
        )),
        Some(_) => return Err(bad("Invalid expiry_date_str: expected YYYY-MM-DD.")),
    };
    let days = get_uint(body, "expiry_days", 1, 36_500)?;
    let pending = get_uint(body, "pending_activation_days", 1, 36_500)?;
    if user.activation_type == "flexible_days" {
        if let Some(p) = pending {
            user.pending_activation_days = Some(p as u32);
        }
        let p = user
            .pending_activation_days
            .ok_or_else(|| bad("pending_activation_days is required for flexible_days."))?;
        user.expiry_at = user.activated_at.map(|a| a + u64::from(p) * 86_400);
    } else {
        user.pending_activation_days = None;
        if let Some(d) = date {
            user.expiry_at = d;
        } else if let Some(d) = days {
            user.expiry_at = Some(now + d * 86_400);
        } else if creating {
            // No expiry given at creation: the user never expires.
            user.expiry_at = None;
        }
    }

    for (field, slot) in [
        ("enable_openvpn", &mut user.enable_openvpn),
        ("enable_wg1", &mut user.enable_wg1),
    ] {
        if let Some(b) = get_bool(body, field)? {
            *slot = b;
        }
    }
    if let Some(p) = get_secret(body, "l2tp_password")? {
        user.l2tp_password = Some(p);
    }
    if let Some(b) = get_bool(body, "enable_l2tp")? {
        user.enable_l2tp = b;
    }
    if user.enable_l2tp && user.l2tp_password.is_none() {
        return Err(bad("l2tp_password is required when enable_l2tp is true."));
    }
    if let Some(p) = get_secret(body, "cisco_password")? {
        user.cisco_password = Some(p);
    }
    if let Some(b) = get_bool(body, "enable_cisco")? {
        user.enable_cisco = b;
    }
    if user.enable_cisco && user.cisco_password.is_none() {
        return Err(bad("cisco_password is required when enable_cisco is true."));
    }

    // `nodes`, or the legacy `allowed_nodes` when `nodes` is absent.
    if let Some(v) = body
        .get("nodes")
        .or_else(|| body.get("allowed_nodes"))
        .filter(|v| !v.is_null())
    {
        let list = v
            .as_array()
            .ok_or_else(|| bad("Invalid nodes: expected a list such as [\"main\", \"node_1\"]."))?;
        let mut nodes = Vec::new();
        for n in list {
            let n = n
                .as_str()
                .filter(|n| validate::is_server_identifier(n))
                .ok_or_else(|| bad("Invalid nodes: each entry is \"main\" or \"node_<id>\"."))?;
            if !nodes.iter().any(|x| x == n) {
                nodes.push(n.to_string());
            }
        }
        user.nodes = nodes;
    }
    match body.get("notes") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.chars().count() <= 1000 => user.notes = s.clone(),
        Some(_) => return Err(bad("Invalid notes: a text of at most 1000 characters.")),
    }
    user.enforce(now);
    Ok(())
}

fn new_user_template(now: u64) -> User {
    User {
        enabled: true,
        max_clients: 1,
        data_limit_unit: "GB".into(),
        activation_type: "fixed_date".into(),
        enable_openvpn: true,
        created_at: now,
        ..User::default()
    }
}

/// 32 random bytes per token, fetched in chunks under the host's 64 KiB cap.
fn random_chunks(count: usize, each: usize) -> Vec<Vec<u8>> {
    let per_call = (65_536 / each).max(1);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let n = per_call.min(count - out.len());
        let bytes = crypto::random_bytes((n * each) as u32);
        out.extend(bytes.chunks(each).map(<[u8]>::to_vec));
    }
    out
}

/// Creates the users `body` asks for (`username`, or `bulk_count` random
/// names) and answers their names.
pub fn create(caller: &Caller, body: &Map<String, Value>) -> Result<Vec<String>, Fail> {
    let now = util::now_secs();
    let bulk = match body.get("bulk_count") {
        None | Some(Value::Null) => None,
        Some(_) => Some(get_uint(body, "bulk_count", 1, MAX_BULK)?.unwrap_or(1)),
    };
    let single = match (bulk, body.get("username")) {
        (None, None | Some(Value::Null)) => return Err(bad("Username is required.")),
        (None, Some(Value::String(s))) if s.trim().is_empty() => {
            return Err(bad("Username is required."));
        }
        (None, Some(Value::String(s))) if validate::is_valid_name(s.trim()) => {
            Some(s.trim().to_string())
        }
        (None, Some(_)) => {
            return Err(bad(
                "Invalid username: 3 to 32 letters, digits, '_', '.' or '-'.",
            ));
        }
        (Some(_), _) => None,
    };
    let count = bulk.unwrap_or(1) as usize;

    let mut template = new_user_template(now);
    apply(body, &mut template, now, true)?;

    // The owner: the sub-admin behind the key; for the main admin, the
    // optional sub_admin_id.
    let sub_id = match caller {
        Caller::Sub { id } => Some(*id),
        Caller::Main => get_uint(body, "sub_admin_id", 1, u64::MAX)?,
    };
    template.owner = match sub_id {
        Some(id) => store::users::sub_owner(id),
        None => "main".into(),
    };
    template.sub_admin_id = sub_id;

    let tokens = random_chunks(count, 32);
    // Random names: "user" and at least 4 digits, more when the panel is
    // large enough that 4 digits would collide often.
    let existing = kv::count("uname/")? as usize;
    let mut digits = 4u32;
    while 10usize.pow(digits) < 10 * (existing + count) && digits < 12 {
        digits += 1;
    }

    store::transaction(|txn| {
        let mut names: Vec<String> = Vec::with_capacity(count);
        let mut template = template.clone();
        if let Some(name) = &single {
            if let Some(owner) = txn.get(&store::users::name_key(name))? {
                return Err(name_taken(caller, &owner));
            }
            names.push(name.clone());
        } else {
            let mut seen = HashSet::with_capacity(count);
            let modulus = 10u64.pow(digits);
            while names.len() < count {
                let batch = random_chunks(count - names.len(), 8);
                for r in batch {
                    let n = u64::from_le_bytes(r.try_into().unwrap_or([0; 8])) % modulus;
                    let name = format!("user{n:0width$}", width = digits as usize);
                    if seen.contains(&name) || txn.get(&store::users::name_key(&name))?.is_some() {
                        continue;
                    }
                    seen.insert(name.clone());
                    names.push(name);
                }
            }
        }
        if let Some(id) = sub_id {
            let mut sa: SubAdmin = txn
                .get_json(&store::users::sa_key(id))?
                .ok_or_else(|| refuse(404, "Sub-admin not found"))?;
            restrict_nodes(&mut template, &sa)?;
            check_servers(txn, body)?;
            check_quota(&sa, count as u64, template.data_limit_bytes)?;
            sa.users_count += count as u64;
            sa.allocated_bytes += template.data_limit_bytes.unwrap_or(0) * count as u64;
            txn.set_json(&store::users::sa_key(id), &sa)?;
        } else {
            check_servers(txn, body)?;
        }
        let mut pool = wg::Pool::open(txn)?;
        for (name, token) in names.iter().zip(&tokens) {
            let mut user = template.clone();
            user.username = name.clone();
            user.token = crypto::hex(token);
            pool.assign(txn, &mut user)?;
            store::users::put_user(txn, &store::users::user_key(&user.owner, name), &user)?;
            txn.set(&store::users::name_key(name), user.owner.as_bytes())?;
        }
        pool.close(txn)?;
        Ok(names)
    })
}

/// The refusal of a name that is taken (stored owner segment `owner`).
/// Names are unique across the panel, since they are the logins on every
/// server, so a sub-admin must be refused another sub-admin's (or the main
/// admin's) name too; the answer then says only that the name cannot be
/// had, not that someone the caller may not see has a user by that name.
fn name_taken(caller: &Caller, owner: &[u8]) -> Fail {
    if caller.is_main() || owner == caller.owner().as_bytes() {
        refuse(409, "User already exists.")
    } else {
        refuse(409, "Username is not available.")
    }
}

/// A sub-admin's users may use only its `allowed_servers` (when it has a
/// list): no `nodes` means all of those, and any other server is refused.
fn restrict_nodes(user: &mut User, sa: &SubAdmin) -> Result<(), Fail> {
    if sa.allowed_servers.is_empty() {
        return Ok(());
    }
    if user.nodes.is_empty() {
        user.nodes = sa.allowed_servers.clone();
    } else if let Some(n) = user.nodes.iter().find(|n| !sa.allowed_servers.contains(n)) {
        return Err(refuse(
            403,
            &format!("Permission denied: server {n} is not allowed for this sub-admin."),
        ));
    }
    Ok(())
}

/// Whether sub-admin `sa` may take `count` more users with `limit` bytes
/// each: its user-count limit, and with a traffic quota, every user needs a
/// data limit and the sum of limits stays within the quota.
fn check_quota(sa: &SubAdmin, count: u64, limit: Option<u64>) -> Result<(), wasmgate_sdk::Error> {
    if sa.max_users_limit > 0 && sa.users_count + count > sa.max_users_limit {
        return Err(wasmgate_sdk::Error::forbidden(format!(
            "User limit reached: this sub-admin may have at most {} users ({} left).",
            sa.max_users_limit,
            sa.max_users_limit.saturating_sub(sa.users_count)
        )));
    }
    if let Some(quota) = sa.quota_bytes() {
        let Some(limit) = limit else {
            return Err(wasmgate_sdk::Error::forbidden(
                "Traffic quota exceeded: a sub-admin with a traffic quota cannot create unlimited users.",
            ));
        };
        if sa.used_bytes >= quota
            || sa
                .allocated_bytes
                .saturating_add(limit.saturating_mul(count))
                > quota
        {
            return Err(wasmgate_sdk::Error::forbidden(
                "Traffic quota exceeded for this sub-admin.",
            ));
        }
    }
    Ok(())
}

/// Moves `user`'s data limit in its sub-admin's allocation from `old_limit`
/// to its current one, in `txn`; a limit that grows must fit in the quota.
/// `old_limit` must be the limit `txn` read, or the allocation drifts from
/// the sum of the limits and the quota stops holding.
fn reallocate(
    txn: &kv::Txn,
    sa: &mut SubAdmin,
    old_limit: Option<u64>,
    new_limit: Option<u64>,
) -> Result<(), Fail> {
    if old_limit == new_limit {
        return Ok(());
    }
    let rest = sa.allocated_bytes.saturating_sub(old_limit.unwrap_or(0));
    if let Some(quota) = sa.quota_bytes() {
        match new_limit {
            None => {
                return Err(refuse(
                    403,
                    "Traffic quota exceeded: a sub-admin with a traffic quota cannot have unlimited users.",
                ));
            }
            Some(l) if rest.saturating_add(l) > quota && new_limit > old_limit => {
                return Err(refuse(403, "Traffic quota exceeded for this sub-admin."));
            }
            _ => {}
        }
    }
    sa.allocated_bytes = rest + new_limit.unwrap_or(0);
    txn.set_json(&store::users::sa_key(sa.id), sa)?;
    Ok(())
}

/// The user, its sub-admin's allocation and its WireGuard address change in
/// one transaction that starts by reading the user.
/// `body` is the request's JSON object as the API read it, or why it is
/// refused: that refusal is answered only for a user the caller may see.
pub fn edit(
    caller: &Caller,
    name: &str,
    body: Result<&Map<String, Value>, &Fail>,
) -> Result<(), Fail> {
    let now = util::now_secs();
    store::transaction(|txn| {
        let (key, mut u) = find_in(txn, caller, name, MSG_USER_NOT_FOUND)?;
        let body = body.map_err(Fail::clone)?;
        let old_limit = u.data_limit_bytes;
        apply(body, &mut u, now, false)?;
        let sa = match u.sub_admin_id {
            Some(id) => txn.get_json::<SubAdmin>(&store::users::sa_key(id))?,
            None => None,
        };
        if let Some(mut sa) = sa {
            restrict_nodes(&mut u, &sa)?;
            reallocate(txn, &mut sa, old_limit, u.data_limit_bytes)?;
        }
        check_servers(txn, body)?;
        let mut pool = wg::Pool::open(txn)?;
        pool.assign(txn, &mut u)?;
        pool.close(txn)?;
        store::users::put_user(txn, &key, &u)?;
        Ok(())
    })
}

/// Reads the user `name` the caller may see, changes it with `f` and writes
/// it, in one transaction; `f` returns what the handler answers with. `f`
/// may run more than once (on a conflict), each time on a fresh read.
fn update<R>(
    caller: &Caller,
    name: &str,
    message: &str,
    mut f: impl FnMut(&kv::Txn, &mut User) -> Result<R, Fail>,
) -> Result<R, Fail> {
    store::transaction(|txn| {
        let (key, mut u) = find_in(txn, caller, name, message)?;
        let out = f(txn, &mut u)?;
        store::users::put_user(txn, &key, &u)?;
        Ok(out)
    })
}

/// Enables or disables the user by hand: whether it is enabled now, and
/// whether it is active.
pub fn toggle(caller: &Caller, name: &str) -> Result<(bool, bool), Fail> {
    update(caller, name, MSG_USER_NOT_FOUND, |_, u| {
        u.enabled = !u.enabled;
        Ok((u.enabled, u.is_active()))
    })
}

/// A new subscription token and WireGuard key pair at once, the old
/// certificate on the CRL, and the job that makes the new one queued: the
/// user as it is now.
pub fn revoke(caller: &Caller, name: &str) -> Result<User, Fail> {
    const MSG: &str = "User not found or permission denied.";
    let token = util::random_hex(32);
    let u = update(caller, name, MSG, |txn, u| {
        u.token = token.clone();
        // A new WireGuard key too: the old client config stops working.
        if u.wg_public_key.is_some() {
            wg::rotate(u);
        }
        u.cert_generation += 1;
        // The old certificate is on the CRL with the new token; the job
        // makes the new one.
        pki::revoke_in(txn, &u.username)?;
        Ok(u.clone())
    })?;
    let payload = json!({ "username": u.username, "generation": u.cert_generation }).to_string();
    jobs::enqueue(JOB_CERT, payload.as_bytes(), Duration::ZERO)?;
    Ok(u)
}

/// The background half of revoke: makes the user's new client certificate
/// and stamps its generation, unless a later revoke superseded this one or
/// the user is gone.
pub fn cert_job(payload: &[u8]) -> Result<(), String> {
    let p: Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let (Some(name), Some(generation)) = (p["username"].as_str(), p["generation"].as_u64()) else {
        return Err("bad certificate job payload".into());
    };
    let Some((key, u)) = store::users::load_user(name).map_err(|_| "kv".to_string())? else {
        return Ok(());
    };
    if u.cert_generation != generation {
        return Ok(());
    }
    // The new certificate and the stamp in one transaction with the record.
    pki::reissue(&key, name, generation)
        .map(|_| ())
        .map_err(|_| "certificate re-issue failed (see the log)".to_string())
}

/// Traffic to 0: whether that brought the user back (only one stopped by
/// its traffic limit and nothing else comes back).
pub fn reset_traffic(caller: &Caller, name: &str) -> Result<bool, Fail> {
    let now = util::now_secs();
    update(caller, name, MSG_USER_NOT_FOUND, |_, u| {
        let was_active = u.is_active();
        let was_limited = u.limited;
        u.traffic_bytes = 0;
        u.enforce(now);
        // Only a user stopped by its traffic limit comes back: one disabled
        // by hand or expired stays off.
        Ok(was_limited && !was_active && u.is_active())
    })
}

/// Deletes the user `name` the caller may see and releases its place in its
/// sub-admin's counters, in one transaction.
pub fn delete(caller: &Caller, name: &str) -> Result<(), Fail> {
    store::transaction(|txn| {
        let (key, u) = find_in(txn, caller, name, MSG_USER_NOT_FOUND)?;
        if let Some(id) = u.sub_admin_id
            && let Some(mut sa) = txn.get_json::<SubAdmin>(&store::users::sa_key(id))?
        {
            sa.users_count = sa.users_count.saturating_sub(1);
            sa.allocated_bytes = sa
                .allocated_bytes
                .saturating_sub(u.data_limit_bytes.unwrap_or(0));
            txn.set_json(&store::users::sa_key(id), &sa)?;
        }
        drop_user(txn, &key, &u.username)?;
        Ok(())
    })
}

/// Deletes user record `key`, its summary, its name and its WireGuard
/// address, and puts its certificate on the CRL, in `txn`.
pub fn drop_user(txn: &kv::Txn, key: &str, username: &str) -> Result<(), wasmgate_sdk::Error> {
    if let Some(address) = txn.get_json::<User>(key)?.and_then(|u| u.wg_address) {
        txn.delete(&store::wg::addr_key(&address))?;
    }
    pki::revoke_in(txn, username)?;
    txn.delete(key)?;
    txn.delete(&store::users::summary_key(key))?;
    txn.delete(&store::users::name_key(username))
}
