//! The public API under the `/api/` mount: the original's one endpoint with
//! `api-key` and `action`.
//!
//! Order of checks, which decides the message:
//! 1. the API is off, or both method toggles are off: "API is not enabled";
//! 2. the method is neither GET nor POST, its toggle is off, or the key is not
//!    where that method carries it (the query for GET, the body for POST, or
//!    the `X-API-Key` header for either): "API Key not set or method not allowed";
//! 3. the key is not the current API key: "API Key is incorrect";
//! 4. the action.
//!
//! Every answer is HTTP 200, as in the original: clients read `error`.

use serde::Serialize;
use serde_json::Value;
use wasmgate_sdk::{Error, Request, Response, keys, log};

use crate::guests;
use crate::paging;
use crate::params::{Param, Params};
use crate::store::{self, Kind};
use crate::vouchers::{self, NewVoucher};

/// The role of the API key in the `keys` capability.
pub const API_ROLE: &str = "api";

#[derive(Serialize)]
struct Failure<'a> {
    error: bool,
    message: &'a str,
}

/// `{"error":true,"message":...}`, HTTP 200.
pub fn failure(message: &str) -> Response {
    Response::json(
        200,
        &Failure {
            error: true,
            message,
        },
    )
}

#[derive(Serialize)]
struct Success<'a> {
    message: &'a str,
    error: bool,
}

#[derive(Serialize)]
struct Created<'a> {
    message: &'a str,
    user: vouchers::CreatedUser,
    error: bool,
}

const STORAGE_FAILURE: &str = "An error occurred";

/// A client-facing refusal keeps its message; anything else (storage, the
/// host) is "An error occurred", with the detail in the host log.
pub fn error_answer(err: &Error) -> Response {
    if matches!(err.status, 400 | 404 | 409) {
        failure(&err.message)
    } else {
        log::error!("hotspot: {}", err.message);
        failure(STORAGE_FAILURE)
    }
}

pub fn handle(req: &Request) -> Response {
    if req.path() != "/" {
        return Response::json(
            404,
            &Failure {
                error: true,
                message: "Not found: the API answers at the mount prefix only",
            },
        );
    }
    match authorised(req) {
        Ok(params) => dispatch(&params).unwrap_or_else(|e| error_answer(&e)),
        Err(answer) => answer,
    }
}

/// Steps 1 to 3; the request's parameters when they pass.
fn authorised(req: &Request) -> Result<Params, Response> {
    let toggles = store::toggles().map_err(|e| error_answer(&e))?;
    if !toggles.api_enabled || !(toggles.get_enabled || toggles.post_enabled) {
        return Err(failure("API is not enabled"));
    }
    let not_allowed = || failure("API Key not set or method not allowed");
    let params = match req.method() {
        "GET" if toggles.get_enabled => Params::from_query(req),
        "POST" if toggles.post_enabled => {
            Params::from_body(req).map_err(|e| failure(e.message()))?
        }
        _ => return Err(not_allowed()),
    };
    let header = req
        .header("x-api-key")
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let key = match (header, params.own("api-key")) {
        (Some(h), _) => h.to_string(),
        (None, Some(Param::Text(k))) if !k.is_empty() => k.clone(),
        _ => return Err(not_allowed()),
    };
    match keys::verify(&key) {
        Ok(Some(info)) if info.role == API_ROLE => Ok(params),
        Ok(_) => Err(failure("API Key is incorrect")),
        Err(e) => Err(error_answer(&e)),
    }
}

fn text(params: &Params, name: &str) -> Result<Option<String>, Error> {
    params
        .text(name)
        .map_err(|()| Error::bad_request(format!("Invalid {name}: expected a string or a number")))
}

fn dispatch(params: &Params) -> Result<Response, Error> {
    let Some(action) = text(params, "action")? else {
        return Ok(failure("No action set"));
    };
    match action.as_str() {
        "create_voucher" => create_voucher(params),
        "remove_voucher" => remove_voucher(params),
        "get_voucher_users" => users(action.as_str(), Kind::Voucher, params),
        "get_email_users" => users(action.as_str(), Kind::Email, params),
        "get_fb_users" => users(action.as_str(), Kind::Fb, params),
        "get_mobile_users" => users(action.as_str(), Kind::Mobile, params),
        "get_free_users" => users(action.as_str(), Kind::Free, params),
        "get_logins" => logins(params),
        "get_guest_hosts" => guests::guest_hosts(paging::paging(params)?),
        "get_active_guests" => guests::active_guests(paging::paging(params)?),
        _ => Ok(failure(
            "Unknown action: use create_voucher, remove_voucher, get_voucher_users, get_email_users, get_fb_users, get_mobile_users, get_free_users, get_logins, get_guest_hosts or get_active_guests",
        )),
    }
}

/// A user list, paged by id: `next` is the last id listed.
fn users(action: &str, kind: Kind, params: &Params) -> Result<Response, Error> {
    let prefix = store::rec_prefix(kind);
    let list = paging::KvList {
        action,
        field: "users",
        prefix: &prefix,
        cursor: |suffix| suffix.parse::<u64>().map_or(Value::Null, Value::from),
        start: |after| {
            let id: u64 = after.trim().parse().map_err(|_| paging::bad_after())?;
            Ok(format!("{id:016}"))
        },
    };
    paging::kv_list(&list, paging::paging(params)?, |v| Ok(v.to_vec()))
}

/// The login log, oldest first, paged by its key: `next` is opaque.
fn logins(params: &Params) -> Result<Response, Error> {
    let list = paging::KvList {
        action: "get_logins",
        field: "logins",
        prefix: store::LOG_PREFIX,
        cursor: |suffix| Value::String(suffix.to_string()),
        start: |after| {
            if store::is_log_suffix(after) {
                Ok(after.to_string())
            } else {
                Err(paging::bad_after())
            }
        },
    };
    paging::kv_list(&list, paging::paging(params)?, |v| Ok(v.to_vec()))
}

fn create_voucher(params: &Params) -> Result<Response, Error> {
    let new = NewVoucher {
        username: text(params, "username")?,
        passcode: text(params, "passcode")?,
        fullname: text(params, "fullname")?,
        valid_for: text(params, "valid_for")?,
        valid_from: text(params, "valid_from")?,
        // A non-text limit is out of bounds, hence unlimited, like any other.
        download_limit: params.text("download_limit").ok().flatten(),
        upload_limit: params.text("upload_limit").ok().flatten(),
    };
    let voucher = vouchers::create(&new)?;
    log::info!("hotspot: voucher {} created", voucher.id);
    Ok(Response::json(
        200,
        &Created {
            message: "User added successfully",
            user: vouchers::CreatedUser::from(&voucher),
            error: false,
        },
    ))
}

fn remove_voucher(params: &Params) -> Result<Response, Error> {
    let Some(username) = text(params, "username")? else {
        return Ok(failure("No username set"));
    };
    if !vouchers::remove(&username)? {
        return Ok(failure("Username doesn't exist"));
    }
    Ok(Response::json(
        200,
        &Success {
            message: "User removed successfully",
            error: false,
        },
    ))
}
