//! The admin surface, at `/plugins/hotspot/admin/...` on the host's admin
//! listener (behind its bearer token). Answers use the SDK's plain errors
//! (`{"error": "..."}` with a 4xx or 5xx status): this is an operator's tool,
//! not the original's API.

use serde::Serialize;
use serde_json::{Map, Value, json};
use wasmgate_sdk::{Error, Params, Request, Response, Router, keys, kv, log};

use crate::api::API_ROLE;
use crate::guests;
use crate::portal::GATEWAY_ROLE;
use crate::store::{self, Kind, Toggles, Voucher};
use crate::time;
use crate::vouchers::{self, NewVoucher};

/// The most vouchers one batch call creates.
pub const MAX_BATCH: u64 = 1000;

pub fn handle(req: &Request) -> Result<Response, Error> {
    Router::new()
        .get("/settings", settings)
        .put("/settings", change_settings)
        .patch("/settings", change_settings)
        .post("/api-key", rotate_api_key)
        .post("/gateway-key", rotate_gateway_key)
        .post("/vouchers", batch_create)
        .patch("/vouchers/:username", change_voucher)
        .get("/stats", stats)
        .handle(req)
}

#[derive(Serialize)]
struct KeySummary {
    id: String,
    created_at: String,
}

fn current_key(role: &str) -> Result<Option<KeySummary>, Error> {
    Ok(keys::list()?
        .into_iter()
        .rfind(|k| k.role == role)
        .map(|k| KeySummary {
            id: k.id,
            created_at: time::format_datetime(k.created_at),
        }))
}

fn settings_json(t: &Toggles) -> Result<Value, Error> {
    Ok(json!({
        "api_enabled": t.api_enabled,
        "get_enabled": t.get_enabled,
        "post_enabled": t.post_enabled,
        "api_key": current_key(API_ROLE)?,
        "gateway_key": current_key(GATEWAY_ROLE)?,
        "default_valid_for": wasmgate_sdk::config::get_or("default_valid_for", vouchers::DEFAULT_VALID_FOR),
        "guest_links": guests::guest_links(),
    }))
}

fn settings(_: &Request, _: &Params) -> Result<Response, Error> {
    Ok(Response::json(200, &settings_json(&store::toggles()?)?))
}

/// `{"api_enabled"?, "get_enabled"?, "post_enabled"?}`: booleans; the ones
/// left out keep their value.
fn change_settings(req: &Request, _: &Params) -> Result<Response, Error> {
    let changes: Map<String, Value> = req.json()?;
    for (k, v) in &changes {
        if !matches!(k.as_str(), "api_enabled" | "get_enabled" | "post_enabled") {
            return Err(Error::bad_request(format!(
                "unknown setting {k:?}: only api_enabled, get_enabled and post_enabled change here; the rest is config.yaml"
            )));
        }
        if !v.is_boolean() {
            return Err(Error::bad_request(format!("{k} must be true or false")));
        }
    }
    let flag = |name: &str, old: bool| changes.get(name).and_then(Value::as_bool).unwrap_or(old);
    let toggles = kv::transaction(|txn| {
        let old: Toggles = txn.get_json(store::TOGGLES)?.unwrap_or_default();
        let new = Toggles {
            api_enabled: flag("api_enabled", old.api_enabled),
            get_enabled: flag("get_enabled", old.get_enabled),
            post_enabled: flag("post_enabled", old.post_enabled),
        };
        txn.set_json(store::TOGGLES, &new)?;
        Ok(new)
    })?;
    log::info!(
        "hotspot: API toggles now enabled={} get={} post={}",
        toggles.api_enabled,
        toggles.get_enabled,
        toggles.post_enabled
    );
    Ok(Response::json(200, &settings_json(&toggles)?))
}

/// Issues a new key of `role` and revokes every older one; the secret is in
/// this answer only (the host keeps its SHA-256 digest).
///
/// The keys to revoke are listed before the new one is issued: listed
/// after, they would include the keys of concurrent rotations, each of
/// which would revoke the others' new keys and leave none working. This
/// way the key issued last always survives.
fn rotate(role: &str, label: &str) -> Result<Response, Error> {
    let older: Vec<String> = keys::list()?
        .into_iter()
        .filter(|k| k.role == role)
        .map(|k| k.id)
        .collect();
    let issued = keys::issue(role, label, None)?;
    let mut revoked = 0;
    for id in &older {
        if keys::revoke(id)? {
            revoked += 1;
        }
    }
    log::info!(
        "hotspot: {role} key rotated, new id {}, {revoked} revoked",
        issued.info.id
    );
    Ok(Response::json(
        201,
        &json!({
            "id": issued.info.id,
            "key": issued.secret,
            "created_at": time::format_datetime(issued.info.created_at),
            "revoked": revoked,
            "message": "Store this key now: it is not shown again",
        }),
    ))
}

fn rotate_api_key(_: &Request, _: &Params) -> Result<Response, Error> {
    rotate(API_ROLE, "hotspot API key")
}

fn rotate_gateway_key(_: &Request, _: &Params) -> Result<Response, Error> {
    rotate(GATEWAY_ROLE, "hotspot gateway key")
}

fn field_text(body: &Map<String, Value>, name: &str) -> Result<Option<String>, Error> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(Error::bad_request(format!(
            "{name} must be a string or a number"
        ))),
    }
}

/// `{"count": 1..=1000, "valid_for"?, "valid_from"?, "download_limit"?,
/// "upload_limit"?}`: that many vouchers with random usernames, passcodes
/// and names, as create_voucher would make them. For printing a batch of
/// vouchers (and for seeding the benchmark).
fn batch_create(req: &Request, _: &Params) -> Result<Response, Error> {
    let body: Map<String, Value> = req.json()?;
    let count = body
        .get("count")
        .and_then(Value::as_u64)
        .filter(|n| (1..=MAX_BATCH).contains(n))
        .ok_or_else(|| {
            Error::bad_request(format!("count must be a number from 1 to {MAX_BATCH}"))
        })?;
    let new = NewVoucher {
        valid_for: field_text(&body, "valid_for")?,
        valid_from: field_text(&body, "valid_from")?,
        download_limit: field_text(&body, "download_limit").ok().flatten(),
        upload_limit: field_text(&body, "upload_limit").ok().flatten(),
        ..NewVoucher::default()
    };
    let mut users = Vec::new();
    for _ in 0..count {
        users.push(vouchers::CreatedUser::from(&vouchers::create(&new)?));
    }
    Ok(Response::json(
        201,
        &json!({ "created": users.len(), "users": users }),
    ))
}

/// `{"first_login": "Y-m-d H:i:s" | null, "MAC": "..." | null}`: an
/// operator's corrections. Setting first_login moves the start of the
/// validity countdown (null restarts it at the next login); "MAC": null
/// unbinds the device so that another one may log in.
fn change_voucher(req: &Request, params: &Params) -> Result<Response, Error> {
    let body: Map<String, Value> = req.json()?;
    let mut first_login: Option<Option<String>> = None;
    let mut mac: Option<Option<String>> = None;
    for (k, v) in &body {
        match (k.as_str(), v) {
            ("first_login", Value::Null) => first_login = Some(None),
            ("first_login", Value::String(s)) => {
                let ts = time::parse_datetime(s).ok_or_else(|| {
                    Error::bad_request("first_login must be Y-m-d H:i:s (UTC) or null")
                })?;
                first_login = Some(Some(time::format_datetime(ts)));
            }
            ("MAC", Value::Null) => mac = Some(None),
            ("MAC", Value::String(s)) => {
                mac =
                    Some(Some(store::normalize_mac(s).ok_or_else(|| {
                        Error::bad_request("MAC is not a MAC address")
                    })?));
            }
            ("first_login" | "MAC", _) => {
                return Err(Error::bad_request(format!("{k} must be a string or null")));
            }
            _ => {
                return Err(Error::bad_request(format!(
                    "unknown field {k:?}: first_login and MAC change here"
                )));
            }
        }
    }
    let username = &params["username"];
    let now = time::format_datetime(time::now_secs());
    let voucher = kv::transaction(|txn| {
        let id: u64 = txn
            .get_json(&store::idx_key(Kind::Voucher, username))?
            .ok_or_else(|| Error::not_found("Username doesn't exist"))?;
        let key = store::rec_key(Kind::Voucher, id);
        let mut v: Voucher = txn
            .get_json(&key)?
            .ok_or_else(|| Error::not_found("Username doesn't exist"))?;
        if let Some(f) = &first_login {
            v.first_login.clone_from(f);
        }
        if let Some(m) = &mac {
            v.mac.clone_from(m);
        }
        v.last_modified.clone_from(&now);
        txn.set_json(&key, &v)?;
        Ok(v)
    })?;
    Ok(Response::json(200, &voucher))
}

fn stats(_: &Request, _: &Params) -> Result<Response, Error> {
    let count = |kind| kv::count(&store::rec_prefix(kind));
    Ok(Response::json(
        200,
        &json!({
            "vouchers": count(Kind::Voucher)?,
            "email_users": count(Kind::Email)?,
            "fb_users": count(Kind::Fb)?,
            "mobile_users": count(Kind::Mobile)?,
            "free_users": count(Kind::Free)?,
            "active_sessions": kv::count(store::SESSION_PREFIX)?,
            "logins": kv::count(store::LOG_PREFIX)?,
        }),
    ))
}
