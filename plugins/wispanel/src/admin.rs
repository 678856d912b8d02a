//! The admin surface, at `/plugins/wispanel/admin/...` on the host's admin
//! listener (behind its bearer token): API tokens, the resources the license
//! counts, the instance id, the clock's high-water mark and a check of the
//! staged update. Errors use the same envelope as the API.

use serde_json::{Value, json};
use wasmgate_sdk::{Request, Response, keys, kv};

use crate::api::{ApiError, ApiResult, body_object, ok, opt_str};
use crate::license_api::{parse_resource_cursor, resource_entries, resource_json, usage};
use crate::paging;
use crate::settings;
use crate::store::{self, Kind};
use crate::time;

pub const ROLES: [&str; 2] = ["admin", "viewer"];

pub fn handle(req: &Request) -> Response {
    route(req).unwrap_or_else(Response::from)
}

fn route(req: &Request) -> ApiResult {
    let path = req.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    match (req.method(), segs.as_slice()) {
        ("GET", ["tokens"]) => list_tokens(req),
        ("POST", ["tokens"]) => issue_token(req),
        ("DELETE", ["tokens", id]) => revoke_token(id),
        ("GET", ["usage"]) => ok(&json!({ "usage": usage()? })),
        ("PUT", ["usage"]) => set_usage(req),
        ("GET", ["resources"]) => list_resources(req),
        ("POST", ["resources"]) => add_resource(req),
        ("DELETE", ["resources", kind, id]) => remove_resource(kind, id),
        ("GET", ["instance"]) => ok(&json!({ "instance_id": store::instance_id()? })),
        ("GET", ["clock"]) => clock(),
        ("GET", ["update", "staged"]) => crate::update::check_staged(),
        ("PUT", ["clock"]) => set_clock(req),
        ("DELETE", ["clock"]) => {
            kv::delete(store::LAST_SEEN)?;
            clock()
        }
        (
            _,
            [
                "tokens" | "usage" | "resources" | "instance" | "clock" | "update",
                ..,
            ],
        ) => Err(ApiError::new(
            405,
            "METHOD_NOT_ALLOWED",
            "Method not allowed",
        )),
        _ => Err(ApiError::not_found("Not found")),
    }
}

fn token_json(k: &keys::KeyInfo) -> Value {
    json!({ "id": k.id, "role": k.role, "label": k.label, "created_at": k.created_at, "expires_at": k.expires_at })
}

/// `GET /tokens`: `{tokens}` by id; pages with `limit` and `cursor` (an id).
fn list_tokens(req: &Request) -> ApiResult {
    let paging = paging::paging(req)?;
    // The host lists them by id.
    let tokens = keys::list()?;
    let start = paging
        .as_ref()
        .and_then(|p| p.cursor.as_deref())
        .map_or(0, |c| tokens.partition_point(|k| k.id.as_str() <= c));
    paging::answer(
        &paging::Shape {
            head: b"",
            field: "tokens",
        },
        paging.as_ref(),
        tokens[start..]
            .iter()
            .map(|k| Ok((k.id.clone(), paging::to_json(&token_json(k))?))),
    )
}

/// `POST /tokens {role: admin|viewer, label?, expires_at?: unix secs}`:
/// the secret is in the answer once.
fn issue_token(req: &Request) -> ApiResult {
    let body = body_object(req.body())?;
    let role = opt_str(&body, "role")?.unwrap_or_else(|| "viewer".into());
    if !ROLES.contains(&role.as_str()) {
        return Err(ApiError::validation("role must be admin or viewer"));
    }
    let label = opt_str(&body, "label")?.unwrap_or_default();
    let expires_at = match body.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| ApiError::validation("expires_at must be Unix seconds"))?,
        ),
    };
    let issued = keys::issue(&role, &label, expires_at)?;
    Ok(Response::json(
        201,
        &json!({
            "success": true,
            "token": token_json(&issued.info),
            "secret": issued.secret,
            "message": "Store this token now: it is not shown again",
        }),
    ))
}

fn revoke_token(id: &str) -> ApiResult {
    if keys::revoke(id)? {
        ok(&json!({ "success": true, "revoked": id }))
    } else {
        Err(ApiError::not_found("No such token"))
    }
}

fn kind_of(s: &str) -> Result<Kind, ApiError> {
    Kind::parse(s)
        .ok_or_else(|| ApiError::validation("kind must be accounts, domains or databases"))
}

/// `PUT /usage {accounts?, domains?, databases?}`: adds resources named
/// `<kind>-<n>` or removes the newest until each given count is reached,
/// all in one transaction ([`store::set_counts`]), which refuses a change
/// over the host's keys per transaction.
fn set_usage(req: &Request) -> ApiResult {
    let body = body_object(req.body())?;
    let mut wants = Vec::new();
    for kind in Kind::ALL {
        let Some(v) = body.get(kind.as_str()) else {
            continue;
        };
        let want = v.as_u64().filter(|n| *n <= 100_000).ok_or_else(|| {
            ApiError::validation(format!("{} must be a count up to 100000", kind.as_str()))
        })?;
        wants.push((kind, want));
    }
    store::set_counts(&wants, time::now())?;
    ok(&json!({ "success": true, "usage": usage()? }))
}

fn list_resources(req: &Request) -> ApiResult {
    // `GET /resources?kind=`: `{resources}`, kind by kind (accounts,
    // domains, databases) by id; pages with `limit` and `cursor`.
    let paging = paging::paging(req)?;
    let offset = settings::utc_offset()?;
    let mut kinds = match req.query("kind") {
        Some(k) => vec![kind_of(&k)?],
        None => Kind::ALL.to_vec(),
    };
    let mut after = None;
    if let Some(c) = paging.as_ref().and_then(|p| p.cursor.as_deref()) {
        let (kind, id) = parse_resource_cursor(c)?;
        let at = kinds
            .iter()
            .position(|k| *k == kind)
            .ok_or_else(paging::bad_cursor)?;
        kinds.drain(..at);
        after = Some(store::res_key(kind, id));
    }
    let page = paging::kv_page(paging.as_ref());
    let records = kinds
        .into_iter()
        .flat_map(move |kind| paging::KvIter::new(store::res_prefix(kind), after.take(), page));
    paging::answer(
        &paging::Shape {
            head: b"",
            field: "resources",
        },
        paging.as_ref(),
        resource_entries(records, offset),
    )
}

/// `POST /resources {kind, name}`: one more account, domain or database.
fn add_resource(req: &Request) -> ApiResult {
    let body = body_object(req.body())?;
    let kind = kind_of(&opt_str(&body, "kind")?.unwrap_or_default())?;
    let name = opt_str(&body, "name")?.ok_or_else(|| ApiError::validation("name is required"))?;
    if name.chars().count() > 255 {
        return Err(ApiError::validation("name must be at most 255 characters"));
    }
    let r = store::add_resources(kind, &[name], time::now())?;
    let offset = settings::utc_offset()?;
    Ok(Response::json(
        201,
        &json!({ "success": true, "resource": resource_json(&r[0], offset) }),
    ))
}

fn remove_resource(kind: &str, id: &str) -> ApiResult {
    let kind = kind_of(kind)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::not_found("No such resource"))?;
    if store::remove_resource(kind, id)? {
        ok(&json!({ "success": true }))
    } else {
        Err(ApiError::not_found("No such resource"))
    }
}

fn clock() -> ApiResult {
    let seen: Option<i64> = kv::get_json(store::LAST_SEEN)?;
    ok(
        &json!({ "now": time::now(), "last_seen": seen, "tolerance_seconds": settings::clock_tolerance()? }),
    )
}

/// `PUT /clock {last_seen}`: sets the high-water mark, e.g. when restoring
/// a backup onto a machine whose clock is known to be right.
fn set_clock(req: &Request) -> ApiResult {
    let body = body_object(req.body())?;
    let seen = body
        .get("last_seen")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::validation("last_seen must be Unix seconds"))?;
    kv::set_json(store::LAST_SEEN, &seen)?;
    clock()
}
