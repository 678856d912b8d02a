#![doc = include_str!("../README.md")]
//!
//! ## The code
//!
//! wispanel: the WisPanel version, update and license API as a wasmgate
//! plugin, mounted at `/api/v1`.
//!
//! Reading order:
//! 1. this file: authentication (`Authorization: Bearer <token>` checked
//!    with the `keys` capability; roles `admin` and `viewer`), the per-token
//!    rate limit with its headers on every answer, and the routes;
//! 2. [`api`]: the error envelope;
//! 3. [`signed`]: verifying the portal's signed documents;
//!    [`license`]: what a license says and whether it holds now;
//! 4. [`license_api`], [`enforce`]: the license endpoints;
//! 5. [`update`]: the version endpoints and update staging;
//! 6. [`portal`]: the portal over `outbound`; [`store`]: kv layout;
//!    [`settings`]; [`admin`]: tokens and resources on the admin listener;
//!    [`paging`]: how every list pages past the response cap.

mod admin;
mod api;
mod enforce;
mod license;
mod license_api;
mod paging;
mod portal;
mod settings;
mod signed;
mod store;
mod time;
mod update;

use std::time::Duration;

use wasmgate_sdk::{Error, Plugin, Request, Response, keys, ratelimit};

use api::{ApiError, ApiResult};

struct WisPanel;

impl Plugin for WisPanel {
    fn handle(req: &Request) -> Result<Response, Error> {
        Ok(handle(req))
    }

    fn admin(req: &Request) -> Result<Response, Error> {
        Ok(admin::handle(req))
    }
}

wasmgate_sdk::export_plugin!(WisPanel);

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Viewer,
}

/// The token in `Authorization: Bearer <token>`, if any.
fn bearer(req: &Request) -> Option<&str> {
    let v = req.header("authorization")?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The caller's key id and role, or the 401 to answer.
fn authenticate(req: &Request) -> Result<(String, Role), ApiError> {
    let Some(token) = bearer(req) else {
        return Err(ApiError::unauthorized(
            "Authentication required: send Authorization: Bearer <token>",
        ));
    };
    match keys::verify(token)? {
        Some(k) => {
            let role = if k.role == "admin" {
                Role::Admin
            } else {
                Role::Viewer
            };
            Ok((k.id, role))
        }
        None => Err(ApiError::unauthorized("Invalid or expired API token")),
    }
}

fn handle(req: &Request) -> Response {
    let auth = authenticate(req);
    // Counted per token; callers without a valid token are counted per
    // client address, so guessing tokens is limited too.
    let bucket = match &auth {
        Ok((id, _)) => format!("token:{id}"),
        Err(_) => {
            let addr = req.client_addr();
            let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
            format!("anon:{ip}")
        }
    };
    let (limit, window) = match (settings::rate_limit(), settings::rate_window_seconds()) {
        (Ok(l), Ok(w)) => (l, w),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let d = ratelimit::check(&bucket, limit, Duration::from_secs(window));
    let resp = if !d.allowed {
        let now = u64::try_from(time::now()).unwrap_or(0);
        let retry = d.reset_at.saturating_sub(now).max(1);
        Response::from(ApiError::new(
            429,
            "RATE_LIMITED",
            format!("Rate limit of {limit} requests per {window} seconds exceeded; retry in {retry} seconds"),
        ))
        .with_header("retry-after", retry.to_string())
    } else {
        match auth {
            Ok((_, role)) => route(req, role).unwrap_or_else(Response::from),
            Err(e) => e.into(),
        }
    };
    resp.with_header("x-ratelimit-limit", d.limit.to_string())
        .with_header("x-ratelimit-remaining", d.remaining.to_string())
        .with_header("x-ratelimit-reset", d.reset_at.to_string())
}

type Endpoint = fn(&Request) -> ApiResult;

/// (method, path below /api/v1, needs admin, handler).
const ROUTES: &[(&str, &str, bool, Endpoint)] = &[
    ("GET", "/version/info", false, update::info),
    ("GET", "/version/check", false, update::check),
    ("GET", "/version/changelog", false, update::changelog),
    ("GET", "/version/update/status", false, update::status),
    ("POST", "/version/update", true, update::update),
    (
        "POST",
        "/version/direct-update",
        true,
        update::direct_update,
    ),
    ("GET", "/license", false, license_api::get),
    ("GET", "/license/summary", false, license_api::summary),
    ("GET", "/license/limits", false, license_api::limits),
    (
        "GET",
        "/license/disabled-resources",
        false,
        license_api::disabled_resources,
    ),
    ("POST", "/license/activate", true, license_api::activate),
    ("POST", "/license/verify", true, license_api::verify),
    ("POST", "/license/refresh", true, license_api::refresh),
    ("POST", "/license/enforce", true, license_api::enforce),
    ("POST", "/license/re-enable", true, license_api::re_enable),
];

fn route(req: &Request, role: Role) -> ApiResult {
    // "/license/" and "/license" are the same resource.
    let path = match req.path().trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    let mut allowed = Vec::new();
    for (method, pattern, admin_only, endpoint) in ROUTES {
        if *pattern != path {
            continue;
        }
        if *method != req.method() {
            allowed.push(*method);
            continue;
        }
        if *admin_only && role != Role::Admin {
            return Err(ApiError::forbidden(
                "This action needs a token with the admin role",
            ));
        }
        return endpoint(req);
    }
    if allowed.is_empty() {
        Err(ApiError::not_found(format!("No endpoint {path}")))
    } else {
        Err(ApiError::new(
            405,
            "METHOD_NOT_ALLOWED",
            format!("Use {}", allowed.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_sdk::bindings::wasmgate::plugin::types;

    fn req(auth: Option<&str>) -> Request {
        Request::from(types::Request {
            method: "GET".into(),
            path: "/api/v1/license".into(),
            query: String::new(),
            headers: auth
                .map(|a| vec![("authorization".into(), a.into())])
                .unwrap_or_default(),
            body: Vec::new(),
            client_addr: "127.0.0.1:1".into(),
            prefix: "/api/v1".into(),
            request_id: "r".into(),
        })
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(&req(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(&req(Some("bearer  abc "))), Some("abc"));
        assert_eq!(bearer(&req(Some("Basic abc"))), None);
        assert_eq!(bearer(&req(Some("Bearer "))), None);
        assert_eq!(bearer(&req(None)), None);
    }
}
