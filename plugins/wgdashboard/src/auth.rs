//! Who is calling: an API key in `wg-dashboard-apikey`, or a session cookie
//! (`authToken`) from `POST /api/authenticate`; and the endpoints about it
//! (authenticate, validateAuthentication, signout, the API key list).
//!
//! The order is the original's: a non-empty API key header is checked first
//! and, when it is not a live key, the answer is 401 "API Key does not
//! exist" whatever the endpoint; without one, every endpoint that the table
//! in [`crate::api`] does not mark `Public` needs a live session, else 401
//! "Unauthorized access.".
//!
//! Keys are the host's `keys` capability: it keeps SHA-256 digests and checks
//! expiry on every verify. Sessions are kv records under the SHA-256 of the
//! cookie's token, so signout really ends one and a restart keeps them.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use wasmgate_sdk::crypto::{self, HmacAlgorithm};
use wasmgate_sdk::{Error, Request, Response, keys, kv, log, ratelimit};

use crate::api::Call;
use crate::envelope::{self, done, fail, ok};
use crate::paging;
use crate::store::{self, Account, Session};
use crate::{time, totp};

/// The role of dashboard API keys in the `keys` capability.
pub const KEY_ROLE: &str = "dashboard";
pub const API_KEY_HEADER: &str = "wg-dashboard-apikey";
pub const COOKIE: &str = "authToken";

pub const UNAUTHORIZED: &str = "Unauthorized access.";
pub const NO_SUCH_KEY: &str = "API Key does not exist";

/// How the request is authenticated.
pub enum Caller {
    /// A live API key (its id).
    ApiKey,
    /// A live session; the kv key of its record.
    Session(String),
    /// Nobody: only the public endpoints answer.
    Anonymous,
}

/// Step one of every request. `Err` is the 401 to answer.
pub fn caller(req: &Request) -> Result<Caller, Response> {
    if let Some(key) = req
        .header(API_KEY_HEADER)
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        return match keys::verify(key) {
            Ok(Some(info)) if info.role == KEY_ROLE => Ok(Caller::ApiKey),
            Ok(_) => Err(envelope::unauthorized(NO_SUCH_KEY)),
            Err(e) => Err(envelope::from_error(&e)),
        };
    }
    match live_session(req) {
        Ok(Some(key)) => Ok(Caller::Session(key)),
        Ok(None) => Ok(Caller::Anonymous),
        Err(e) => Err(envelope::from_error(&e)),
    }
}

/// The value of the `authToken` cookie, if the request has one.
fn cookie_token(req: &Request) -> Option<&str> {
    req.headers()
        .iter()
        .filter(|(k, _)| k == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn session_key(token: &str) -> String {
    format!(
        "{}{}",
        store::SESSION_PREFIX,
        crypto::hex(&crypto::sha256(token.as_bytes()))
    )
}

/// The kv key of the request's session when it is live; an expired one is
/// deleted on the way.
fn live_session(req: &Request) -> Result<Option<String>, Error> {
    let Some(token) = cookie_token(req) else {
        return Ok(None);
    };
    let key = session_key(token);
    match kv::get_json::<Session>(&key)? {
        Some(s) if s.expires_at > time::now_secs() => Ok(Some(key)),
        Some(_) => {
            kv::delete(&key)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// A new session: the token goes in the cookie, its digest in kv. With
/// `verified_hash`, only while the account's password hash is still the
/// one the password was checked against: `None` when it changed.
fn start_session(message: Value, verified_hash: Option<&str>) -> Result<Option<Response>, Error> {
    let settings = store::settings()?;
    let token = crypto::hex(&crypto::random_bytes(32));
    let now = time::now_secs();
    let started = kv::transaction(|txn| {
        // A password change ends every session it finds; one written after
        // that change from a check against the old password would survive
        // it, so the hash is read again in the session's own transaction.
        if let Some(hash) = verified_hash {
            let account: Option<Account> = txn.get_json(store::ACCOUNT)?;
            if account.is_none_or(|a| a.password_hash != hash) {
                return Ok(false);
            }
        }
        txn.set_json(
            &session_key(&token),
            &Session {
                created_at: now,
                expires_at: now + settings.session_ttl_secs,
            },
        )?;
        Ok(true)
    })?;
    if !started {
        return Ok(None);
    }
    let secure = if settings.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    Ok(Some(
        envelope::answer(200, true, &message, &Value::Null).with_header(
            "set-cookie",
            format!(
                "{COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
                settings.session_ttl_secs
            ),
        ),
    ))
}

fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// GET /api/validateAuthentication: whether the cookie's session is live.
pub fn validate(call: &Call) -> Result<Response, Error> {
    Ok(match call.caller {
        Caller::Session(_) => done(),
        _ => fail("Invalid authentication."),
    })
}

/// GET /api/signout: ends the cookie's session (an API key has none).
pub fn signout(call: &Call) -> Result<Response, Error> {
    if let Caller::Session(key) = call.caller {
        kv::delete(key)?;
    }
    Ok(done().with_header("set-cookie", clear_cookie()))
}

/// GET /api/isTotpEnabled.
pub fn totp_enabled(_: &Call) -> Result<Response, Error> {
    let on = store::account()?.is_some_and(|a| a.totp_secret.is_some());
    Ok(ok(&on))
}

fn text_field(body: &Map<String, Value>, name: &str) -> String {
    match body.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The client's IP address without its port, IPv4-mapped addresses as IPv4.
fn client_ip(req: &Request) -> String {
    let addr = req.client_addr();
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sa) => sa.ip().to_canonical().to_string(),
        Err(_) => addr.to_string(),
    }
}

/// The 429 for a login attempt over its limits, or `None` to go on.
///
/// The address is counted first, and the (address, username) pair only for
/// an attempt the address's limit let through: an address over its limit
/// adds no bucket whatever username it sends, so the buckets one address
/// can make per window are bounded by its own limit. No bucket is per
/// username alone: one address guessing `admin`'s password must not lock
/// `admin` out everywhere else.
fn over_login_limit(settings: &store::Settings, client: &str, username: &str) -> Option<Response> {
    let window = Duration::from_secs(60);
    let mut decision = ratelimit::check(
        &format!("login/addr/{client}"),
        settings.login_attempts_per_address_per_minute,
        window,
    );
    if decision.allowed {
        let name_digest = crypto::hex(&crypto::sha256(username.as_bytes()));
        decision = ratelimit::check(
            &format!("login/addr-user/{client}/{name_digest}"),
            settings.login_attempts_per_minute,
            window,
        );
    }
    if decision.allowed {
        return None;
    }
    let retry = decision
        .reset_at
        .saturating_sub(time::now_secs())
        .clamp(1, window.as_secs());
    log::warn!("wgdashboard: login attempts over the limit from {client}");
    Some(
        envelope::answer(
            429,
            false,
            &Value::String("Too many login attempts, try again later.".into()),
            &Value::Null,
        )
        .with_header("retry-after", retry.to_string()),
    )
}

/// POST /api/authenticate {username, password, totp}.
///
/// Rate-limited per client address and per (address, username) before
/// anything is checked. The password check (PBKDF2) always runs, so a wrong username
/// takes as long as a wrong password; the username and the TOTP candidates
/// are compared in constant time. A TOTP step that already logged in, or an
/// earlier one, is refused. With a valid API key the original starts a
/// session without a password; so does this.
pub fn authenticate(call: &Call) -> Result<Response, Error> {
    let (req, caller) = (call.req, call.caller);
    let account = store::account()?;
    let welcome = Value::Bool(account.as_ref().is_none_or(|a| a.welcome_session));
    if matches!(caller, Caller::ApiKey) {
        return start_session(welcome, None)?
            .ok_or_else(|| Error::internal("a session without a condition was not started"));
    }
    let body: Map<String, Value> = req.json().unwrap_or_default();
    let username = text_field(&body, "username");
    let password = text_field(&body, "password");
    let code = text_field(&body, "totp");

    let settings = store::settings()?;
    let client = client_ip(req);
    if let Some(refusal) = over_login_limit(&settings, &client, &username) {
        return Ok(refusal);
    }

    let totp_on = account.as_ref().is_some_and(|a| a.totp_secret.is_some());
    let refused = if totp_on {
        "Sorry, your username, password or OTP is incorrect."
    } else {
        "Sorry, your username or password is incorrect."
    };
    let Some(account) = account else {
        // No account yet: nothing can log in (there is no default admin/admin).
        return Ok(fail(refused));
    };
    let password_ok = crypto::password_verify(&password, &account.password_hash);
    let username_ok = crypto::constant_time_eq(username.as_bytes(), account.username.as_bytes());
    let step = match &account.totp_secret {
        None => None,
        Some(secret) => {
            let key = totp::base32_decode(secret).unwrap_or_default();
            totp::matching_step(
                &key,
                &code,
                time::now_secs(),
                |k, m| crypto::hmac(HmacAlgorithm::Sha1, k, m),
                crypto::constant_time_eq,
            )
        }
    };
    if !(password_ok && username_ok && (!totp_on || step.is_some())) {
        log::info!("wgdashboard: login refused from {client}");
        return Ok(fail(refused));
    }
    if let Some(step) = step {
        let fresh = kv::transaction(|txn| {
            let last: Option<u64> = txn.get_json(store::TOTP_LAST_STEP)?;
            if last.is_some_and(|last| step <= last) {
                return Ok(false);
            }
            txn.set_json(store::TOTP_LAST_STEP, &step)?;
            Ok(true)
        })?;
        if !fresh {
            log::info!("wgdashboard: login refused from {client}: TOTP code already used");
            return Ok(fail(refused));
        }
    }
    log::info!("wgdashboard: login from {client}");
    match start_session(
        Value::Bool(account.welcome_session),
        Some(&account.password_hash),
    )? {
        Some(answer) => Ok(answer),
        None => {
            log::info!("wgdashboard: login refused from {client}: the password changed meanwhile");
            Ok(fail(refused))
        }
    }
}

/// Removes every session (the admin's password change, or its own route).
pub fn end_all_sessions() -> Result<usize, Error> {
    let all = kv::list(store::SESSION_PREFIX)?;
    for (key, _) in &all {
        kv::delete(key)?;
    }
    Ok(all.len())
}

/// An API key as getDashboardAPIKeys lists it. `Key` is the key's id, not
/// its secret: the host keeps only a digest, so the secret exists only in
/// newDashboardAPIKey's answer.
#[derive(Serialize)]
struct KeyJson {
    #[serde(rename = "CreatedAt")]
    created_at: String,
    #[serde(rename = "ExpiredAt")]
    expired_at: Option<String>,
    #[serde(rename = "Key")]
    key: String,
}

fn key_list(new: Option<(&str, &str)>) -> Result<Vec<KeyJson>, Error> {
    Ok(keys::list()?
        .into_iter()
        .filter(|k| k.role == KEY_ROLE)
        .map(|k| KeyJson {
            created_at: time::format_datetime(k.created_at),
            expired_at: k.expires_at.map(time::format_datetime),
            key: match new {
                Some((id, secret)) if id == k.id => secret.to_string(),
                _ => k.id,
            },
        })
        .collect())
}

fn key_json(k: &KeyJson) -> Result<Vec<u8>, Error> {
    paging::to_json(k)
}

/// GET /api/getDashboardAPIKeys, paged by key id.
pub fn get_keys(call: &Call) -> Result<Response, Error> {
    let paging = match paging::paging(call.req) {
        Ok(p) => p,
        Err(answer) => return Ok(answer),
    };
    let mut keys = key_list(None)?;
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    paging::list(&keys, |k| k.key.as_str(), key_json, paging)
}

/// POST /api/newDashboardAPIKey {NeverExpire, ExpiredAt}: the list, in
/// which the new key's `Key` is its secret, this once.
pub fn new_key(call: &Call) -> Result<Response, Error> {
    let Ok(body) = call.req.json::<Map<String, Value>>() else {
        return Ok(fail("Invalid JSON body"));
    };
    let never = body
        .get("NeverExpire")
        .or_else(|| body.get("neverExpire"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let expires_at = if never {
        None
    } else {
        let text = body
            .get("ExpiredAt")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(at) = time::parse_datetime(text) else {
            return Ok(fail(
                "ExpiredAt must be a date and time as YYYY-MM-DD HH:MM:SS (UTC), or set NeverExpire",
            ));
        };
        if at <= time::now_secs() {
            return Ok(fail("ExpiredAt must be in the future"));
        }
        Some(at)
    };
    let issued = keys::issue(KEY_ROLE, "WGDashboard API key", expires_at)?;
    log::info!("wgdashboard: API key {} created", issued.info.id);
    let all = key_list(Some((&issued.info.id, &issued.secret)))?;
    if let Some(answer) = paging::whole(&all, key_json)? {
        return Ok(answer);
    }
    // The secret exists only in this answer: it must get out even when the
    // whole list does not fit.
    let new: Vec<&KeyJson> = all.iter().filter(|k| k.key == issued.secret).collect();
    Ok(envelope::answer(
        200,
        true,
        &Value::String(
            "The key list is too large for one answer, so only the new key is listed: page getDashboardAPIKeys with ?limit= and &after="
                .into(),
        ),
        &new,
    ))
}

/// POST /api/deleteDashboardAPIKey {Key}: by id (as listed) or by secret.
pub fn delete_key(call: &Call) -> Result<Response, Error> {
    let body: Map<String, Value> = call.req.json().unwrap_or_default();
    let given = body.get("Key").and_then(Value::as_str).unwrap_or_default();
    if given.is_empty() {
        return Ok(fail(NO_SUCH_KEY));
    }
    let id = keys::list()?
        .into_iter()
        .find(|k| k.role == KEY_ROLE && k.id == given)
        .map(|k| k.id);
    let id = match id {
        Some(id) => Some(id),
        None => keys::verify(given)?
            .filter(|k| k.role == KEY_ROLE)
            .map(|k| k.id),
    };
    match id {
        Some(id) if keys::revoke(&id)? => {
            log::info!("wgdashboard: API key {id} deleted");
            let all = key_list(None)?;
            Ok(paging::whole(&all, key_json)?.unwrap_or_else(|| {
                envelope::answer(
                    200,
                    true,
                    &Value::String(
                        "API key deleted; the key list is too large for one answer: page getDashboardAPIKeys with ?limit= and &after="
                            .into(),
                    ),
                    &Value::Null,
                )
            }))
        }
        _ => Ok(fail(NO_SUCH_KEY)),
    }
}
