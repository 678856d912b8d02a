//! What every endpoint shares: the `{success, message, ...}` envelope, the
//! seed's messages, the caller's role from `X-API-KEY`, JSON bodies.
//!
//! Handlers return `Result<Response, Fail>` and use `?` on anything that
//! can fail; [`reply`] turns the result into the response. A `Fail` is
//! already an envelope response, so a helper can refuse with the exact
//! message the seed shows.

use serde::Serialize;
use serde_json::{Map, Value};
use wasmgate_sdk::{Request, Response, keys, kv, log};

use crate::fail::{Fail, refuse};
use crate::store;

/// The original panel's messages, word for word: its clients match on them.
pub const MSG_KEY_MISSING: &str = "API key is missing";
pub const MSG_KEY_INVALID: &str = "Invalid or inactive API key";
pub const MSG_MAIN_REQUIRED: &str = "Permission denied: Main admin API key required.";
pub const MSG_PERMISSION_DENIED: &str = "Permission denied";
pub const MSG_USER_NOT_FOUND: &str = "User not found or permission denied";

pub const MSG_EMPTY_BODY: &str = "Request body must be JSON and not empty";
pub const MSG_NOT_FOUND: &str = "Not found";

/// The key role of a main-admin key; a sub-admin key's role is
/// `sub_admin:<id>` ([`sub_admin_role`]).
pub const ROLE_MAIN: &str = "main_admin";
pub const ROLE_SUB_PREFIX: &str = "sub_admin:";

impl From<Fail> for Response {
    fn from(f: Fail) -> Response {
        fail(f.status, &f.message)
    }
}

pub type Reply = Result<Response, Fail>;

/// The response of a handler's result.
pub fn reply(r: Reply) -> Response {
    r.unwrap_or_else(Response::from)
}

/// `{"success": true, "message": message}` with status 200.
pub fn ok(message: &str) -> Response {
    Response::json(
        200,
        &serde_json::json!({ "success": true, "message": message }),
    )
}

/// `{"success": true, ...fields}` with `status`. `fields` must be a JSON
/// object (anything else is sent as `{"success": true}`); its own `success`
/// is overwritten.
pub fn ok_with(status: u16, fields: Value) -> Response {
    let mut map = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    map.insert("success".into(), Value::Bool(true));
    Response::json(status, &Value::Object(map))
}

/// `{"success": false, "message": message}` with `status`.
pub fn fail(status: u16, message: &str) -> Response {
    Response::json(
        status,
        &serde_json::json!({ "success": false, "message": message }),
    )
}

/// 404 `{"success": false, "message": "Not found"}` for a path no route has.
pub fn not_found_route() -> Response {
    fail(404, MSG_NOT_FOUND)
}

/// Who is calling, from the `X-API-KEY` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A main-admin key: sees and changes everything.
    Main,
    /// A sub-admin (reseller) key: only its own users, within its quota.
    Sub { id: u64 },
}

impl Caller {
    pub fn is_main(&self) -> bool {
        matches!(self, Caller::Main)
    }

    /// The owner segment of this caller's users in kv (`main` or
    /// `sa<id:010>`); see [`crate::store`].
    pub fn owner(&self) -> String {
        match self {
            Caller::Main => "main".to_string(),
            Caller::Sub { id } => store::users::sub_owner(*id),
        }
    }
}

/// The key role of sub-admin `id`'s keys.
pub fn sub_admin_role(id: u64) -> String {
    format!("{ROLE_SUB_PREFIX}{id}")
}

/// The caller behind `X-API-KEY`: 401 "API key is missing" without the
/// header, 401 "Invalid or inactive API key" for an unknown or expired key,
/// a key of another role, or a sub-admin that was deleted or deactivated.
pub fn authenticate(req: &Request) -> Result<Caller, Fail> {
    let secret = req
        .header("x-api-key")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refuse(401, MSG_KEY_MISSING))?;
    let info = keys::verify(secret)?.ok_or_else(|| refuse(401, MSG_KEY_INVALID))?;
    if info.role == ROLE_MAIN {
        return Ok(Caller::Main);
    }
    let id = info
        .role
        .strip_prefix(ROLE_SUB_PREFIX)
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or_else(|| refuse(401, MSG_KEY_INVALID))?;
    let active = kv::get_json::<Value>(&store::users::sa_key(id))?
        .and_then(|sa| sa.get("is_active").and_then(Value::as_bool))
        .unwrap_or(false);
    if !active {
        return Err(refuse(401, MSG_KEY_INVALID));
    }
    Ok(Caller::Sub { id })
}

/// 403 "Permission denied: Main admin API key required." for a sub-admin.
pub fn require_main(caller: &Caller) -> Result<(), Fail> {
    if caller.is_main() {
        Ok(())
    } else {
        Err(refuse(403, MSG_MAIN_REQUIRED))
    }
}

/// 403 "Permission denied" for a sub-admin (the routes where the seed uses
/// the short message: sub_admins, POST/DELETE public/ports, settings).
pub fn require_main_short(caller: &Caller) -> Result<(), Fail> {
    if caller.is_main() {
        Ok(())
    } else {
        Err(refuse(403, MSG_PERMISSION_DENIED))
    }
}

/// The body as a JSON object. An empty body, `{}`, or anything that is not a
/// JSON object is 400 "Request body must be JSON and not empty".
pub fn json_object(req: &Request) -> Result<Map<String, Value>, Fail> {
    match serde_json::from_slice::<Value>(req.body()) {
        Ok(Value::Object(m)) if !m.is_empty() => Ok(m),
        _ => Err(refuse(400, MSG_EMPTY_BODY)),
    }
}

/// The body as a JSON object, `{}` when the body is empty; a body that is
/// not a JSON object is 400 "Request body must be JSON and not empty".
pub fn json_object_or_empty(req: &Request) -> Result<Map<String, Value>, Fail> {
    if req.body().iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(req.body()) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(refuse(400, MSG_EMPTY_BODY)),
    }
}

/// Serialises `value` for a response field.
pub fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The public base URL for links (`sub_url`, downloads): setting
/// `public_url` (e.g. `https://panel.example.com:2096`), else the request's
/// `Host` header over http.
pub fn public_base(req: &Request) -> String {
    if let Some(url) = wasmgate_sdk::config::get("public_url").filter(|u| !u.trim().is_empty()) {
        return url.trim().trim_end_matches('/').to_string();
    }
    let host = req.header("host").unwrap_or("localhost");
    format!("http://{host}")
}

/// One JSON call to another wasmgate running this plugin (a node, or a
/// node's panel) over `outbound`: the parsed answer of a 2xx with
/// `success: true`, or why not in words that name `peer` ("node",
/// "panel"), e.g. "Cannot reach the node: ...".
pub fn call_peer(
    peer: &str,
    method: &str,
    url: &str,
    auth: (&str, &str),
    body: Option<&Value>,
    timeout_ms: u32,
) -> Result<Value, String> {
    use wasmgate_sdk::outbound::{self, OutboundError};
    let mut headers = vec![
        ("accept".to_string(), "application/json".to_string()),
        (auth.0.to_string(), auth.1.to_string()),
    ];
    if body.is_some() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let answer = outbound::send(&outbound::Request {
        method: method.into(),
        url: url.to_string(),
        headers,
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        timeout_ms: Some(timeout_ms),
    })
    .map_err(|e| match e {
        OutboundError::Denied(why) => {
            format!("The {peer}'s address is not allowed by the outbound grant: {why}")
        }
        OutboundError::Invalid(why) => format!("Invalid {peer} address: {why}"),
        OutboundError::Timeout => format!("The {peer} did not answer in time."),
        OutboundError::TooLarge(cap) => format!("The {peer}'s answer is over {cap} bytes."),
        OutboundError::Connect(why) => format!("Cannot reach the {peer}: {why}"),
    })?;
    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if (200..300).contains(&answer.status)
        && value.get("success").and_then(Value::as_bool) == Some(true)
    {
        return Ok(value);
    }
    let said = value
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    Err(format!(
        "The {peer} answered HTTP {}: {said}",
        answer.status
    ))
}

/// The host's default `limits.max_response_bytes`.
const DEFAULT_RESPONSE_CAP: usize = 4 << 20;

/// The largest answer the host lets through: setting `max_response_bytes`,
/// which must equal the plugin's `limits.max_response_bytes` (a plugin
/// cannot read its limits). The host turns a larger answer into a bare
/// 500, so lists check against this first and ask the caller to page.
pub fn response_cap() -> usize {
    wasmgate_sdk::config::get("max_response_bytes")
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_RESPONSE_CAP)
}

/// The most entries one page holds.
pub const MAX_PAGE: usize = 1000;

/// A page asked for with the query parameters `limit` (1 to [`MAX_PAGE`],
/// default [`MAX_PAGE`]) and `cursor` (the `next_cursor` of the page before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    pub limit: usize,
    pub cursor: Option<String>,
}

/// The page the request asks for; None when it sends neither parameter
/// (the original's clients), which gets the whole list as before.
pub fn paging(req: &Request) -> Result<Option<Paging>, Fail> {
    let (limit, cursor) = (req.query("limit"), req.query("cursor"));
    if limit.is_none() && cursor.is_none() {
        return Ok(None);
    }
    let limit = match limit {
        None => MAX_PAGE,
        Some(l) => l
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                refuse(
                    400,
                    &format!("Invalid limit: expected a whole number from 1 to {MAX_PAGE}."),
                )
            })?,
    };
    let cursor = cursor.filter(|c| !c.is_empty());
    Ok(Some(Paging { limit, cursor }))
}

/// The refusal of a cursor this list never handed out.
pub fn bad_cursor() -> Fail {
    refuse(
        400,
        "Invalid cursor: pass the next_cursor of the page before.",
    )
}

/// One page of a list built in memory: its entries from the cursor on,
/// at most `page.limit` of them, and the offset where the rest starts (the
/// cursor is that offset).
pub fn window<T>(mut items: Vec<T>, page: &Paging) -> Result<(Vec<T>, usize), Fail> {
    let start = match &page.cursor {
        None => 0,
        Some(c) => c.parse::<usize>().map_err(|_| bad_cursor())?,
    };
    let end = start.saturating_add(page.limit).min(items.len());
    let items = if start < items.len() {
        items.truncate(end);
        items.split_off(start)
    } else {
        Vec::new()
    };
    Ok((items, start))
}

/// A page of `n` entries or fewer that fits in [`response_cap`]: the
/// bytes `render(k)` makes of the first `k` entries, for the largest `k`
/// tried (`n`, then halving) that fits. A page asked for with a `limit`
/// too large for the cap is cut short rather than refused; its
/// `next_cursor` then starts at the first entry left out. When not even
/// one entry fits, the one-entry rendering, which [`within_cap`] refuses.
pub fn fitting(n: usize, mut render: impl FnMut(usize) -> Vec<u8>) -> Vec<u8> {
    let cap = response_cap();
    let mut k = n;
    loop {
        let bytes = render(k);
        if bytes.len() <= cap || k <= 1 {
            return bytes;
        }
        k = k.div_ceil(2);
    }
}

/// Routes whose answer is a list that pages.
pub fn pages(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["users", "list_all"]
            | ["users", _, "all_ovpn_links"]
            | ["sub_admins"]
            | ["nodes"]
            | ["public", "ports"]
            | ["public", "servers_for_ports"]
            | ["public", "all_selectable_servers"]
            | ["traffic", "users"]
    )
}

/// `answer`, or when it is larger than [`response_cap`], a 400 in the
/// envelope that tells the caller what to do instead of the host's bare
/// 500: ask for pages on a list (a smaller `limit` when it already pages).
pub fn within_cap(req: &Request, segs: &[&str], answer: Response) -> Response {
    let cap = response_cap();
    if answer.body.len() <= cap {
        return answer;
    }
    let paged = req.query("limit").is_some() || req.query("cursor").is_some();
    let what = match (pages(segs), paged) {
        (true, false) => "ask for it in pages with the query parameters limit and cursor",
        (true, true) => "ask for a smaller limit",
        (false, _) => "this answer cannot be made smaller",
    };
    log::write(
        log::Level::Warn,
        &format!(
            "vpnpanel: an answer of {} bytes is over the {cap}-byte cap",
            answer.body.len()
        ),
    );
    fail(
        400,
        &format!("The answer is larger than this server's {cap}-byte response limit: {what}."),
    )
}

/// `{"success": true, ...fields, field: items}`; with `page`, one page of
/// `items` ([`window`], [`fitting`]) and `next_cursor` (null on the last
/// page).
pub fn list_answer(
    page: Option<&Paging>,
    field: &str,
    items: Vec<Value>,
    mut fields: Map<String, Value>,
) -> Reply {
    let Some(p) = page else {
        fields.insert(field.into(), Value::Array(items));
        return Ok(ok_with(200, Value::Object(fields)));
    };
    let total = items.len();
    let (items, start) = window(items, p)?;
    let body = fitting(items.len(), |k| {
        let mut f = fields.clone();
        f.insert(field.into(), Value::Array(items[..k].to_vec()));
        let next = (start + k < total).then(|| (start + k).to_string());
        f.insert("next_cursor".into(), serde_json::json!(next));
        f.insert("success".into(), Value::Bool(true));
        serde_json::to_vec(&Value::Object(f)).unwrap_or_default()
    });
    Ok(Response::bytes(200, "application/json", body))
}
