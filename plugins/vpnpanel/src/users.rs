//! `/users...`: creation (single and bulk, one transaction with the
//! sub-admin's counters), get, edit, toggle, revoke, reset_traffic, delete,
//! sub URL, OpenVPN links, list_all.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{Map, Value, json};
use wasmgate_sdk::{Request, Response, crypto, jobs, kv};

use crate::common::{self, Caller, MSG_USER_NOT_FOUND, Reply};
use crate::fail::{self, Fail, refuse};
use crate::servers;
use crate::store::{self, users::SubAdmin, users::User};
use crate::util;
use crate::validate;

/// The largest `bulk_count`.
pub const MAX_BULK: u64 = 10_000;

pub fn route(req: &Request, caller: &Caller, rest: &[&str]) -> Reply {
    match (req.method(), rest) {
        ("GET", ["list_all"]) => list_all(req, caller),
        ("POST", []) => create(req, caller),
        ("GET", [name]) => get(caller, name),
        ("PUT", [name]) => edit(req, caller, name),
        ("DELETE", [name]) => delete(caller, name),
        ("POST", [name, "toggle"]) => toggle(caller, name),
        ("POST", [name, "revoke"]) => revoke(req, caller, name),
        ("POST", [name, "reset_traffic"]) => reset_traffic(caller, name),
        ("GET", [name, "sub"]) => sub_url(req, caller, name),
        ("GET", [name, "all_ovpn_links"]) => ovpn_links(req, caller, name),
        _ => Ok(common::not_found_route()),
    }
}

/// The user `name` if the caller may see it; else 404 with `message`. For
/// answers only: a change reads the user with [`find_in`].
fn find(caller: &Caller, name: &str, message: &str) -> Result<(String, User), Fail> {
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
        if !crate::nodes::server_exists_in(txn, server)? {
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

fn create(req: &Request, caller: &Caller) -> Reply {
    let body = common::json_object_or_empty(req)?;
    let now = util::now_secs();
    let bulk = match body.get("bulk_count") {
        None | Some(Value::Null) => None,
        Some(_) => Some(get_uint(&body, "bulk_count", 1, MAX_BULK)?.unwrap_or(1)),
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
    apply(&body, &mut template, now, true)?;

    // The owner: the sub-admin behind the key; for the main admin, the
    // optional sub_admin_id.
    let sub_id = match caller {
        Caller::Sub { id } => Some(*id),
        Caller::Main => get_uint(&body, "sub_admin_id", 1, u64::MAX)?,
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

    let created = store::transaction(|txn| {
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
            check_servers(txn, &body)?;
            check_quota(&sa, count as u64, template.data_limit_bytes)?;
            sa.users_count += count as u64;
            sa.allocated_bytes += template.data_limit_bytes.unwrap_or(0) * count as u64;
            txn.set_json(&store::users::sa_key(id), &sa)?;
        } else {
            check_servers(txn, &body)?;
        }
        let mut pool = crate::wg::Pool::open(txn)?;
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
    })?;

    Ok(common::ok_with(
        201,
        json!({ "message": "Users created successfully.", "created_users": created }),
    ))
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

fn get(caller: &Caller, name: &str) -> Reply {
    let (_, u) = find(caller, name, MSG_USER_NOT_FOUND)?;
    let now = util::now_secs();
    let endpoints = servers::endpoints(&u)?;
    let servers = servers::servers()?;
    let usable: Vec<&servers::Server> = servers.iter().filter(|s| u.may_use(&s.id)).collect();
    let openvpn: Vec<Value> = if u.enable_openvpn {
        usable
            .iter()
            .map(|s| json!({ "id": s.id, "name": s.name, "is_tunnel": false, "address": s.host }))
            .collect()
    } else {
        Vec::new()
    };
    let active = u.active_connections(now);
    let psk = crate::settings::psk()?;
    Ok(common::ok_with(
        200,
        json!({
            "username": u.username,
            "is_active": u.is_active(),
            "status": u.status(),
            "is_online": active > 0,
            "active_connections": active,
            "max_clients": u.max_clients,
            "data_limit": u.data_limit,
            "data_limit_unit": u.data_limit_unit,
            "data_limit_bytes": u.data_limit_bytes,
            "total_traffic_bytes": u.traffic_bytes,
            "activation_type": u.activation_type,
            "pending_activation_days": u.pending_activation_days,
            "activated_at": u.activated_at,
            "expiry_date": u.expiry_at.map(validate::format_date),
            "sub_admin_id": u.sub_admin_id,
            "nodes": u.nodes,
            "notes": u.notes,
            "protocols": {
                "openvpn": u.enable_openvpn,
                "l2tp": u.enable_l2tp,
                "cisco": u.enable_cisco,
                "wg1": u.enable_wg1,
            },
            "wireguard": crate::wg::user_view(&u),
            "openvpn_servers": openvpn,
            "openvpn_profiles": endpoints.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
            "l2tp": u.enable_l2tp.then(|| json!({
                "servers": usable.iter().map(|s| s.host.clone()).collect::<Vec<_>>(),
                "username": u.username, "password": u.l2tp_password, "psk": psk,
            })),
            "cisco": u.enable_cisco.then(|| json!({
                "servers": usable.iter().map(|s| s.host.clone()).collect::<Vec<_>>(),
                "username": u.username, "password": u.cisco_password,
            })),
            "certificate_generation": u.cert_generation,
            "certificate_pending": u.cert_issued < u.cert_generation,
            "created_at": u.created_at,
        }),
    ))
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
fn edit(req: &Request, caller: &Caller, name: &str) -> Reply {
    let now = util::now_secs();
    store::transaction(|txn| {
        let (key, mut u) = find_in(txn, caller, name, MSG_USER_NOT_FOUND)?;
        let body = common::json_object(req)?;
        let old_limit = u.data_limit_bytes;
        apply(&body, &mut u, now, false)?;
        let sa = match u.sub_admin_id {
            Some(id) => txn.get_json::<SubAdmin>(&store::users::sa_key(id))?,
            None => None,
        };
        if let Some(mut sa) = sa {
            restrict_nodes(&mut u, &sa)?;
            reallocate(txn, &mut sa, old_limit, u.data_limit_bytes)?;
        }
        check_servers(txn, &body)?;
        let mut pool = crate::wg::Pool::open(txn)?;
        pool.assign(txn, &mut u)?;
        pool.close(txn)?;
        store::users::put_user(txn, &key, &u)?;
        Ok(())
    })?;
    Ok(common::ok("User updated successfully."))
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

fn toggle(caller: &Caller, name: &str) -> Reply {
    let (enabled, active) = update(caller, name, MSG_USER_NOT_FOUND, |_, u| {
        u.enabled = !u.enabled;
        Ok((u.enabled, u.is_active()))
    })?;
    Ok(common::ok_with(
        200,
        json!({ "message": "User toggled", "enabled": enabled, "is_active": active }),
    ))
}

fn sub_link(req: &Request, u: &User) -> String {
    format!(
        "{}/sub/{}?token={}",
        common::public_base(req),
        u.username,
        u.token
    )
}

fn revoke(req: &Request, caller: &Caller, name: &str) -> Reply {
    const MSG: &str = "User not found or permission denied.";
    let token = util::random_hex(32);
    let u = update(caller, name, MSG, |txn, u| {
        u.token = token.clone();
        // A new WireGuard key too: the old client config stops working.
        if u.wg_public_key.is_some() {
            crate::wg::rotate(u);
        }
        u.cert_generation += 1;
        // The old certificate is on the CRL with the new token; the job
        // makes the new one.
        crate::pki::revoke_in(txn, &u.username)?;
        Ok(u.clone())
    })?;
    let payload = json!({ "username": u.username, "generation": u.cert_generation }).to_string();
    jobs::enqueue(crate::JOB_CERT, payload.as_bytes(), Duration::ZERO)?;
    Ok(common::ok_with(
        200,
        json!({
            "message": "Token revoked instantly. Certificate generation running in background.",
            "new_subscription_url": sub_link(req, &u),
        }),
    ))
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
    crate::pki::reissue(&key, name, generation)
        .map(|_| ())
        .map_err(|_| "certificate re-issue failed (see the log)".to_string())
}

fn reset_traffic(caller: &Caller, name: &str) -> Reply {
    let now = util::now_secs();
    let re_enabled = update(caller, name, MSG_USER_NOT_FOUND, |_, u| {
        let was_active = u.is_active();
        let was_limited = u.limited;
        u.traffic_bytes = 0;
        u.enforce(now);
        // Only a user stopped by its traffic limit comes back: one disabled
        // by hand or expired stays off.
        Ok(was_limited && !was_active && u.is_active())
    })?;
    Ok(common::ok_with(
        200,
        json!({ "message": format!("Traffic reset for '{name}'."), "user_re_enabled": re_enabled }),
    ))
}

/// Deletes the user `name` the caller may see and releases its place in its
/// sub-admin's counters, in one transaction.
fn delete(caller: &Caller, name: &str) -> Reply {
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
    })?;
    Ok(common::ok(&format!("User '{name}' deleted successfully.")))
}

/// Deletes user record `key`, its summary, its name and its WireGuard
/// address, and puts its certificate on the CRL, in `txn`.
pub fn drop_user(txn: &kv::Txn, key: &str, username: &str) -> Result<(), wasmgate_sdk::Error> {
    if let Some(address) = txn.get_json::<User>(key)?.and_then(|u| u.wg_address) {
        txn.delete(&store::wg::addr_key(&address))?;
    }
    crate::pki::revoke_in(txn, username)?;
    txn.delete(key)?;
    txn.delete(&store::users::summary_key(key))?;
    txn.delete(&store::users::name_key(username))
}

fn sub_url(req: &Request, caller: &Caller, name: &str) -> Reply {
    let (_, u) = find(caller, name, MSG_USER_NOT_FOUND)?;
    Ok(common::ok_with(
        200,
        json!({ "sub_url": sub_link(req, &u) }),
    ))
}

fn ovpn_links(req: &Request, caller: &Caller, name: &str) -> Reply {
    let page = common::paging(req)?;
    let (_, u) = find(caller, name, MSG_USER_NOT_FOUND)?;
    let base = common::public_base(req);
    let links: Vec<Value> = if u.enable_openvpn {
        servers::endpoints(&u)?
            .iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "server": e.server,
                    "protocol": e.protocol,
                    "port": e.port,
                    "url": format!("{base}/download/{}/{}.ovpn?token={}", u.username, e.name, u.token),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut fields = Map::new();
    fields.insert("username".into(), json!(u.username));
    common::list_answer(page.as_ref(), "links", links, fields)
}

/// One entry of list_all, in the order of the whole list: the main admin's
/// users, then each sub-admin followed by its users. `at` is the entry's
/// place in that order (a summary's kv key without `ls/`; a sub-admin's is
/// its owner segment and `/`, which sorts before its users), and the
/// cursor of the page that ends with it.
enum Entry {
    User { at: String, summary: Vec<u8> },
    Head { at: String },
}

impl Entry {
    fn at(&self) -> &str {
        match self {
            Entry::User { at, .. } | Entry::Head { at, .. } => at,
        }
    }
}

/// Summaries under `ls/<owner>/` after place `after`, until `out` holds `want`.
fn summaries(
    owner: &str,
    after: Option<&str>,
    want: usize,
    out: &mut Vec<Entry>,
) -> Result<(), Fail> {
    if out.len() >= want {
        return Ok(());
    }
    let after = after.map(|a| format!("ls/{a}"));
    store::scan(&format!("ls/{owner}/"), after.as_deref(), |key, summary| {
        let at = key.strip_prefix("ls/").unwrap_or(&key).to_string();
        out.push(Entry::User { at, summary });
        Ok(out.len() < want)
    })
}

/// The main admin's list_all entries after place `after`, until `want`, and
/// the `{id, username}` of each sub-admin (by owner segment) they reach.
fn main_entries(
    after: Option<&str>,
    want: usize,
) -> Result<(Vec<Entry>, BTreeMap<String, Value>), Fail> {
    let mut out = Vec::new();
    summaries("main", after, want, &mut out)?;
    // Only the sub-admins from the cursor's on: a page never reads the
    // records of the sub-admins before it.
    let first_sa = after
        .and_then(|a| a.strip_prefix("sa"))
        .and_then(|a| a.get(..10))
        .and_then(|id| id.parse::<u64>().ok())
        .map(|id| store::users::sa_key(id.saturating_sub(1)));
    let mut heads = Vec::new();
    store::scan("sa/", first_sa.as_deref(), |_, bytes| {
        if out.len() + heads.len() >= want {
            return Ok(false);
        }
        let sa: SubAdmin = serde_json::from_slice(&bytes)
            .map_err(|e| fail::internal(format!("sub-admin record: {e}")))?;
        heads.push(sa);
        Ok(true)
    })?;
    let mut names = BTreeMap::new();
    for sa in heads {
        if out.len() >= want {
            break;
        }
        let owner = store::users::sub_owner(sa.id);
        let head = format!("{owner}/");
        // Entirely before the cursor: this sub-admin and its users were on
        // earlier pages.
        if after.is_some_and(|a| a > head.as_str() && !a.starts_with(&head)) {
            continue;
        }
        names.insert(
            owner.clone(),
            json!({ "id": sa.id, "username": sa.username }),
        );
        // A sub-admin whose users continue from the page before is not an
        // entry again; its block still opens this page.
        if after.is_none_or(|a| a < head.as_str()) {
            out.push(Entry::Head { at: head.clone() });
        }
        summaries(
            &owner,
            after.filter(|a| a.starts_with(&head)),
            want,
            &mut out,
        )?;
    }
    Ok((out, names))
}

/// A JSON array of the stored summaries among `entries`, joined without
/// parsing.
fn join_users<'a>(entries: impl Iterator<Item = &'a Entry>, out: &mut Vec<u8>) {
    out.push(b'[');
    let mut first = true;
    for e in entries {
        if let Entry::User { summary, .. } = e {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(summary);
        }
    }
    out.push(b']');
}

/// The owner segment of a list_all place.
fn owner_of(at: &str) -> &str {
    at.split('/').next().unwrap_or_default()
}

/// `{id, username, users}` of the sub-admin whose entries `block` are.
fn sub_admin_block(block: &[&Entry], names: &BTreeMap<String, Value>, out: &mut Vec<u8>) {
    let owner = block.first().map(|e| owner_of(e.at())).unwrap_or_default();
    let head = names
        .get(owner)
        .map(Value::to_string)
        .unwrap_or_else(|| "{}".into());
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    if head.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(br#""users":"#);
    join_users(block.iter().copied(), out);
    out.push(b'}');
}

/// `GET /users/list_all`: every user the caller may see, or one page of
/// them ([`common::paging`]). The cursor is the place of the page's last
/// entry, so pages stay right while users come and go.
fn list_all(req: &Request, caller: &Caller) -> Reply {
    let page = common::paging(req)?;
    let after = page.as_ref().and_then(|p| p.cursor.clone());
    if let Some(a) = &after {
        let valid = match caller {
            Caller::Sub { .. } => a
                .strip_prefix(&format!("{}/", caller.owner()))
                .is_some_and(validate::is_valid_name),
            Caller::Main => a.split_once('/').is_some_and(|(owner, name)| {
                (owner == "main" || owner.len() == 12 && owner.starts_with("sa"))
                    && (name.is_empty() || validate::is_valid_name(name))
            }),
        };
        if !valid {
            return Err(common::bad_cursor());
        }
    }
    // One more than the page: whether there is a next page.
    let want = page.as_ref().map_or(usize::MAX, |p| p.limit + 1);
    let (entries, names) = match caller {
        Caller::Sub { .. } => {
            let mut out = Vec::new();
            summaries(&caller.owner(), after.as_deref(), want, &mut out)?;
            (out, BTreeMap::new())
        }
        Caller::Main => main_entries(after.as_deref(), want)?,
    };
    let all = entries.len();
    let render = |k: usize| {
        let entries = &entries[..k];
        let mut out = Vec::with_capacity(4096);
        match caller {
            Caller::Sub { .. } => {
                out.extend_from_slice(br#"{"success":true,"users":"#);
                join_users(entries.iter(), &mut out);
            }
            Caller::Main => {
                out.extend_from_slice(br#"{"success":true,"main_admin":{"users":"#);
                join_users(
                    entries.iter().take_while(|e| e.at().starts_with("main/")),
                    &mut out,
                );
                out.extend_from_slice(br#"},"sub_admins":["#);
                // One block per sub-admin: its head, or its users continued from
                // the page before, and the users that follow on this page.
                let rest: Vec<&Entry> = entries
                    .iter()
                    .skip_while(|e| e.at().starts_with("main/"))
                    .collect();
                let mut blocks = rest.chunk_by(|a, b| {
                    matches!(b, Entry::User { .. }) && owner_of(a.at()) == owner_of(b.at())
                });
                if let Some(block) = blocks.next() {
                    sub_admin_block(block, &names, &mut out);
                    for block in blocks {
                        out.push(b',');
                        sub_admin_block(block, &names, &mut out);
                    }
                }
                out.push(b']');
            }
        }
        if page.is_some() {
            // The place of the page's last entry, when entries follow it.
            let next = (k < all)
                .then(|| k.checked_sub(1).map(|i| entries[i].at()))
                .flatten();
            out.extend_from_slice(br#","next_cursor":"#);
            out.extend_from_slice(json!(next).to_string().as_bytes());
        }
        out.push(b'}');
        out
    };
    let body = match &page {
        None => render(all),
        Some(p) => common::fitting(all.min(p.limit), render),
    };
    Ok(Response::bytes(200, "application/json", body))
}
