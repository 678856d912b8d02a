//! The admin surface, at `/plugins/wgdashboard/admin/...` on the host's
//! admin listener (behind its bearer token): the operator's first-run steps.
//! Answers use the SDK's plain errors (`{"error": "..."}` with a 4xx).
//!
//! | route | what it does |
//! | --- | --- |
//! | `GET /state` | username, whether a password and TOTP are set, the first-run flag, counts |
//! | `PUT /account` | `{"username"?, "password"?, "welcome_session"?}`; a new password ends every session |
//! | `POST /totp` | `{"secret"?}` (base32; generated when absent): turns TOTP on, answers the otpauth URI once |
//! | `DELETE /totp` | turns TOTP off |
//! | `DELETE /sessions` | ends every session |

use serde_json::{Map, Value, json};
use wasmgate_sdk::{Error, Params, Request, Response, Router, crypto, kv, log};

use crate::auth;
use crate::store::{self, Account};
use crate::totp;

pub fn handle(req: &Request) -> Result<Response, Error> {
    Router::new()
        .get("/state", state)
        .put("/account", set_account)
        .post("/totp", set_totp)
        .delete("/totp", clear_totp)
        .delete("/sessions", end_sessions)
        .handle(req)
}

fn state_json(account: Option<&Account>) -> Result<Value, Error> {
    Ok(json!({
        "username": account.map(|a| a.username.clone()),
        "password_set": account.is_some_and(|a| !a.password_hash.is_empty()),
        "totp_enabled": account.is_some_and(|a| a.totp_secret.is_some()),
        "welcome_session": account.is_none_or(|a| a.welcome_session),
        "configurations": kv::count(store::CONF_PREFIX)?,
        "sessions": kv::count(store::SESSION_PREFIX)?,
    }))
}

fn state(_: &Request, _: &Params) -> Result<Response, Error> {
    Ok(Response::json(
        200,
        &state_json(store::account()?.as_ref())?,
    ))
}

/// `{"username"?, "password"?, "welcome_session"?}`. The first call must set
/// both username and password. The password is stored as the host's PBKDF2
/// hash; changing it ends every session.
fn set_account(req: &Request, _: &Params) -> Result<Response, Error> {
    let body: Map<String, Value> = req.json()?;
    for k in body.keys() {
        if !matches!(k.as_str(), "username" | "password" | "welcome_session") {
            return Err(Error::bad_request(format!(
                "unknown field {k:?}: username, password and welcome_session change here"
            )));
        }
    }
    let text = |name: &str| -> Result<Option<String>, Error> {
        match body.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::bad_request(format!("{name} must be a string"))),
        }
    };
    let username = text("username")?;
    let password = text("password")?;
    let welcome = match body.get("welcome_session") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(Error::bad_request("welcome_session must be true or false")),
    };
    if let Some(u) = &username
        && (u.is_empty() || u.len() > 64 || u.chars().any(char::is_control))
    {
        return Err(Error::bad_request(
            "username must be 1 to 64 characters without control characters",
        ));
    }
    if let Some(p) = &password
        && (p.len() < 8 || p.len() > 1024)
    {
        return Err(Error::bad_request("password must be 8 to 1024 bytes"));
    }
    // The hash is slow: made before the transaction, which may run again.
    let password_hash = password.as_deref().map(crypto::password_hash);
    // Read and written in one transaction, so that a concurrent change (TOTP
    // turned on meanwhile) is not overwritten with what was read before it.
    let account = kv::transaction(|txn| {
        let old: Option<Account> = txn.get_json(store::ACCOUNT)?;
        if old.is_none() && (username.is_none() || password_hash.is_none()) {
            return Err(Error::bad_request(
                "the first call sets both username and password",
            ));
        }
        let mut account = old.unwrap_or_default();
        if let Some(u) = &username {
            account.username.clone_from(u);
        }
        if let Some(h) = &password_hash {
            account.password_hash.clone_from(h);
        }
        if let Some(w) = welcome {
            account.welcome_session = w;
        }
        txn.set_json(store::ACCOUNT, &account)?;
        Ok(account)
    })?;
    if password.is_some() {
        let ended = auth::end_all_sessions()?;
        log::info!("wgdashboard: password changed, {ended} session(s) ended");
    }
    Ok(Response::json(200, &state_json(Some(&account))?))
}

/// `{"secret"?}`: TOTP on with this base32 secret, or a fresh 160-bit one.
/// The answer carries the secret and its otpauth URI, this once.
fn set_totp(req: &Request, _: &Params) -> Result<Response, Error> {
    let body: Map<String, Value> = if req.body().is_empty() {
        Map::new()
    } else {
        req.json()?
    };
    let secret = match body.get("secret") {
        None | Some(Value::Null) => totp::base32_encode(&crypto::random_bytes(20)),
        Some(Value::String(s)) => {
            let bytes = totp::base32_decode(s)
                .filter(|b| b.len() >= 10)
                .ok_or_else(|| Error::bad_request("secret must be base32 of at least 80 bits"))?;
            totp::base32_encode(&bytes)
        }
        Some(_) => return Err(Error::bad_request("secret must be a base32 string")),
    };
    let account = kv::transaction(|txn| {
        let Some(mut account) = txn.get_json::<Account>(store::ACCOUNT)? else {
            return Err(Error::bad_request(
                "set the username and password first (PUT /account)",
            ));
        };
        account.totp_secret = Some(secret.clone());
        txn.set_json(store::ACCOUNT, &account)?;
        // A new secret starts a new series of steps.
        txn.delete(store::TOTP_LAST_STEP)?;
        Ok(account)
    })?;
    let label: String = percent_encoding::utf8_percent_encode(
        &account.username,
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let uri = format!(
        "otpauth://totp/WGDashboard:{label}?secret={secret}&issuer=WGDashboard&algorithm=SHA1&digits={}&period={}",
        totp::DIGITS,
        totp::STEP
    );
    log::info!("wgdashboard: TOTP turned on");
    Ok(Response::json(
        201,
        &json!({ "secret": secret, "uri": uri, "message": "Store this secret now: it is not shown again" }),
    ))
}

fn clear_totp(_: &Request, _: &Params) -> Result<Response, Error> {
    let account = kv::transaction(|txn| {
        let Some(mut account) = txn.get_json::<Account>(store::ACCOUNT)? else {
            return Err(Error::not_found("no account"));
        };
        account.totp_secret = None;
        txn.set_json(store::ACCOUNT, &account)?;
        Ok(account)
    })?;
    log::info!("wgdashboard: TOTP turned off");
    Ok(Response::json(200, &state_json(Some(&account))?))
}

fn end_sessions(_: &Request, _: &Params) -> Result<Response, Error> {
    let ended = auth::end_all_sessions()?;
    Ok(Response::json(200, &json!({ "ended": ended })))
}
